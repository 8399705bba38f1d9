// The dashboard's entry: hash routes → views. Each view returns a function that detaches it.
import { askForKey } from './api.js';
import { benchmarksView } from './benchmarks.js';
import { compareView } from './compare.js';
import { live } from './live.js';
import { overviewView } from './overview.js';
import { resultsView } from './results.js';

const routes = [
  [/^#?\/?$/, 'overview', (root) => overviewView(root)],
  [/^#\/results(?:\/([^/]+))?$/, 'results', (root, id) => resultsView(root, id)],
  [/^#\/compare(?:\/([^/]+))?$/, 'compare', (root, ids) => compareView(root, ids)],
  [/^#\/benchmarks$/, 'benchmarks', (root) => benchmarksView(root)],
];

let detach = () => undefined;

function route() {
  const root = document.getElementById('view');
  detach();
  const hash = location.hash || '#/';
  for (const [re, name, view] of routes) {
    const m = re.exec(hash);
    if (!m) continue;
    for (const a of document.querySelectorAll('[data-nav]')) a.classList.toggle('on', a.dataset.nav === name);
    detach = view(root, m[1] ? decodeURIComponent(m[1]) : undefined) ?? (() => undefined);
    document.title = `batchwright · ${name}`;
    return;
  }
  location.hash = '#/';
}

document.getElementById('change-key').addEventListener('click', async () => {
  if (await askForKey()) location.reload();
});
window.addEventListener('hashchange', route);
live.start();
route();
