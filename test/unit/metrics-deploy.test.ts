import { readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { createMetrics, type MetricsDeps } from '../../src/metrics/metrics.js';
import { createLogger } from '../../src/log/logger.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const read = (p: string) => readFileSync(path.join(ROOT, p), 'utf8');

/** The metric names our registry exports (collect() runs only at scrape time, so no Redis or SQLite is needed here). */
function exportedNames(): Set<string> {
  const unused = undefined as unknown;
  const m = createMetrics({
    redis: unused,
    prefix: 't',
    repo: unused,
    ops: unused,
    log: createLogger('silent'),
  } as MetricsDeps);
  return new Set(m.registry.getMetricsAsArray().map((x) => x.name));
}

// Docker cannot run where these tests run: the files are checked for shape, not run.
describe('monitoring deployment files', () => {
  it('docker-compose.yml runs Prometheus and Grafana with files that exist', () => {
    const compose = parse(read('docker-compose.yml')) as { services: Record<string, { volumes?: string[] }> };
    for (const svc of ['prometheus', 'grafana']) {
      expect(compose.services[svc], svc).toBeDefined();
      for (const v of compose.services[svc]!.volumes ?? []) {
        const src = v.split(':')[0]!;
        if (src.startsWith('./')) expect(existsSync(path.join(ROOT, src)), v).toBe(true);
      }
    }
  });

  it('Prometheus scrapes the API /metrics', () => {
    const prom = parse(read('deploy/prometheus/prometheus.yml'));
    const job = prom.scrape_configs.find((j: any) => j.job_name === 'batchwright');
    expect(job.metrics_path).toBe('/metrics');
    expect(job.static_configs[0].targets).toEqual(['api:4080']);
  });

  it('Grafana provisions the Prometheus datasource and a dashboard whose queries use only metrics we export', () => {
    const ds = parse(read('deploy/grafana/provisioning/datasources/prometheus.yml'));
    expect(ds.datasources[0]).toMatchObject({
      type: 'prometheus',
      uid: 'batchwright-prometheus',
      url: 'http://prometheus:9090',
    });
    const prov = parse(read('deploy/grafana/provisioning/dashboards/batchwright.yml'));
    expect(prov.providers[0].options.path).toBe('/var/lib/grafana/dashboards');
    const dash = JSON.parse(read('deploy/grafana/dashboards/batchwright.json')) as {
      uid: string;
      panels: { title: string; datasource: { uid: string }; targets: { expr: string }[] }[];
    };
    expect(dash.uid).toBe('batchwright-overview');
    const names = exportedNames();
    const used = new Set<string>();
    for (const p of dash.panels) {
      expect(p.datasource.uid, p.title).toBe('batchwright-prometheus');
      for (const t of p.targets)
        for (const m of t.expr.matchAll(/\bbatchwright_[a-z_]+/g)) used.add(m[0].replace(/_(bucket|count|sum)$/, ''));
    }
    for (const n of used) expect(names.has(n), n).toBe(true);
    // The dashboard covers what the operator needs.
    for (const n of [
      'batchwright_batches',
      'batchwright_tokens_output_total',
      'batchwright_engine_state',
      'batchwright_engine_swaps_total',
      'batchwright_gpu_utilization_percent',
      'batchwright_gpu_memory_used_bytes',
      'batchwright_gpu_temperature_celsius',
    ]) {
      expect(used.has(n), n).toBe(true);
    }
  });
});
