/**
 * Contract-test helper: validates response bodies against OpenAI's published API description.
 *
 *   assertMatchesSchema('Batch', body)   // throws an Error listing every violation
 *   schemaNames()                         // every schema name that can be asked for
 *
 * Sources (copies in the repository, with OpenAI's MIT licence: test/fixtures/openai/):
 *   - test/fixtures/openai/openapi.yaml      OpenAPI 3.1.0, all of `components.schemas` (~1,400 names):
 *                                        'OpenAIFile', 'ListFilesResponse', 'DeleteFileResponse', 'Batch',
 *                                        'ListBatchesResponse', 'Error', 'ErrorResponse',
 *                                        'CreateChatCompletionResponse', 'CreateCompletionResponse',
 *                                        'CreateEmbeddingResponse', 'ListModelsResponse', 'Model', ...
 *   - test/fixtures/openai/batch-lines.yaml  the per-line objects of batch files, exposed under their names:
 *                                        'BatchRequestInput'  (one line of a batch input file)
 *                                        'BatchRequestOutput' (one line of a batch output file AND of a
 *                                                              batch error file; same schema for both)
 *                                        That file also ends with a truncated copy of 'Certificate'
 *                                        (`properties:` with no value); openapi.yaml wins on name clashes,
 *                                        so 'Certificate' is openapi.yaml's.
 *
 * How the OpenAPI dialect is mapped onto JSON Schema 2020-12 (Ajv2020, strict: false, allErrors: true).
 * What the spec actually contains (grep of components.schemas) and what we do about it:
 *   - `nullable` (110 uses, OpenAPI 3.0 style, left over in a 3.1 document): `nullable: true` is turned into
 *     "or null": `type: T` -> `type: [T, 'null']` (and `null` added to an `enum`), otherwise the schema is
 *     wrapped as `anyOf: [schema, {type: 'null'}]` (for `$ref`/`oneOf` without `type`, where Ajv's own
 *     `nullable` support throws "nullable cannot be used without type"). `nullable: false` is dropped.
 *     The idiom `allOf: [{$ref: X}, {nullable: true, description}]` makes the parent nullable.
 *     None of the Files/Batches/response schemas use `nullable`: they spell null as `anyOf: [..., {type: 'null'}]`.
 *   - `discriminator` (107), `example` (OpenAPI keyword), `x-*` (x-stainless-const, x-oaiMeta, x-oaiTypeLabel, ...):
 *     annotations only; removed. (`oneOf` keeps its full JSON Schema meaning: exactly one branch must match.)
 *   - `deprecated`, `title`, `description`, `default`, `examples`: standard annotations, left as they are.
 *   - `$recursiveAnchor`/`$recursiveRef: '#'` (2019-09 keywords, only in CompoundFilter/BetaCompoundFilter):
 *     rewritten to a plain `$ref` to the enclosing component.
 *   - `exclusiveMinimum: true` next to `minimum: N` (OpenAPI 3.0 boolean form, 7 uses, fine-tuning schemas only)
 *     becomes `exclusiveMinimum: N` (same for maximum); Ajv2020 rejects the boolean form.
 *   - formats: `uri`, `date` from ajv-formats; `unixtime`, `int64`, `double`, `float`, `binary` are
 *     OpenAPI type annotations and accept anything (the `type` keyword next to them still applies).
 *   - A schema with `properties` but no `type` (only OpenAIFile, Model, and four List*Response schemas we do not
 *     serve) gets `type: 'object'`, otherwise e.g. a bare string would "validate" as an OpenAIFile.
 * Nothing else is loosened: wrong types, missing required keys and bad enum values all fail. Extra keys are
 * allowed wherever the spec does not say `additionalProperties: false` (the spec almost never does).
 *
 * Cost: parsing the 3 MB YAML is most of it (~1.5-2 s, once per process/worker); each schema name is compiled
 * lazily on first use and cached.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { parse } from 'yaml';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const OPENAPI_SPEC_PATH = path.resolve(repoRoot, 'test/fixtures/openai/openapi.yaml');
export const BATCH_LINES_SPEC_PATH = path.resolve(repoRoot, 'test/fixtures/openai/batch-lines.yaml');

const DOC_ID = 'openai';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type SchemaNode = { [key: string]: Json };

// Keywords whose value is one subschema / an array of subschemas / a map of name -> subschema.
const SUBSCHEMA = [
  'items',
  'not',
  'additionalProperties',
  'propertyNames',
  'contains',
  'if',
  'then',
  'else',
  'unevaluatedItems',
  'unevaluatedProperties',
  'additionalItems',
];
const SUBSCHEMA_ARRAY = ['allOf', 'anyOf', 'oneOf', 'prefixItems'];
const SUBSCHEMA_MAP = ['properties', 'patternProperties', '$defs', 'definitions', 'dependentSchemas'];
// Annotation-only keys that do not change what validates.
const ANNOTATIONS = new Set(['description', 'title', 'deprecated', 'default', 'examples', 'readOnly', 'writeOnly']);

function isObject(v: unknown): v is SchemaNode {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function dropsOut(key: string): boolean {
  return key === 'example' || key === 'discriminator' || key.startsWith('x-');
}

/** True for `{nullable: true, description: ...}`: a member that only says "may be null". */
function isNullableOnly(node: Json): boolean {
  if (!isObject(node) || node.nullable !== true) return false;
  return Object.keys(node).every((k) => k === 'nullable' || ANNOTATIONS.has(k) || dropsOut(k));
}

/** Rewrites one schema (recursively) from the OpenAPI dialect into plain JSON Schema 2020-12. See header. */
function normalize(input: Json, component: string): Json {
  if (typeof input === 'boolean' || !isObject(input)) return input;
  const node: SchemaNode = {};
  for (const [key, value] of Object.entries(input)) {
    if (dropsOut(key) || key === '$recursiveAnchor') continue;
    if (key === '$recursiveRef') {
      if (value !== '#')
        throw new Error(`openapi helper: unsupported $recursiveRef ${JSON.stringify(value)} in ${component}`);
      node.$ref = `#/components/schemas/${component}`;
    } else if (SUBSCHEMA.includes(key)) {
      node[key] = normalize(value, component);
    } else if (SUBSCHEMA_ARRAY.includes(key) && Array.isArray(value)) {
      node[key] = value.map((v) => normalize(v, component));
    } else if (SUBSCHEMA_MAP.includes(key) && isObject(value)) {
      node[key] = Object.fromEntries(Object.entries(value).map(([k, v]) => [k, normalize(v, component)]));
    } else {
      node[key] = value; // enum, const, required, type, format, default, ...: data, copied as is
    }
  }

  if (Array.isArray(input.allOf) && input.allOf.some(isNullableOnly)) {
    const kept = input.allOf.filter((m) => !isNullableOnly(m));
    node.allOf = kept.map((v) => normalize(v, component));
    node.nullable = true;
  }

  if (isObject(node.properties) && node.type === undefined) node.type = 'object';

  // OpenAPI 3.0 boolean form `minimum: 0, exclusiveMinimum: true` -> 2020-12 numeric form `exclusiveMinimum: 0`.
  for (const [bound, exclusive] of [
    ['minimum', 'exclusiveMinimum'],
    ['maximum', 'exclusiveMaximum'],
  ] as const) {
    if (typeof node[exclusive] !== 'boolean') continue;
    if (node[exclusive] === true && typeof node[bound] === 'number') {
      node[exclusive] = node[bound];
      delete node[bound];
    } else {
      delete node[exclusive];
    }
  }

  const nullable = node.nullable;
  delete node.nullable;
  if (nullable !== true) return node;
  if (typeof node.type === 'string' && node.const === undefined) {
    if (node.type !== 'null') node.type = [node.type, 'null'];
    if (Array.isArray(node.enum) && !node.enum.includes(null)) node.enum = [...node.enum, null];
    return node;
  }
  return { anyOf: [node, { type: 'null' }] };
}

function loadSchemas(file: string): Record<string, Json> {
  const doc: unknown = parse(readFileSync(file, 'utf8'));
  const schemas = isObject(doc) && isObject(doc.components) ? doc.components.schemas : undefined;
  if (!isObject(schemas)) throw new Error(`openapi helper: no components.schemas in ${file}`);
  return schemas;
}

interface State {
  ajv: Ajv2020;
  names: string[];
  nameSet: Set<string>;
  validators: Map<string, ValidateFunction>;
}

let state: State | undefined;

function load(): State {
  if (state) return state;
  const main = loadSchemas(OPENAPI_SPEC_PATH);
  const lines = loadSchemas(BATCH_LINES_SPEC_PATH);
  const merged: Record<string, Json> = {};
  for (const [name, schema] of Object.entries(main)) merged[name] = normalize(schema, name);
  for (const [name, schema] of Object.entries(lines)) {
    if (!(name in merged)) merged[name] = normalize(schema, name);
  }

  const ajv = new Ajv2020({ strict: false, allErrors: true });
  addFormatsModule.default(ajv); // uri, date, ...
  for (const f of ['unixtime', 'int64', 'int32', 'double', 'float', 'binary']) ajv.addFormat(f, true);
  ajv.addSchema({ $id: DOC_ID, components: { schemas: merged } });

  const names = Object.keys(merged).sort();
  state = { ajv, names, nameSet: new Set(names), validators: new Map() };
  return state;
}

function validatorFor(schemaName: string): ValidateFunction {
  const s = load();
  let validate = s.validators.get(schemaName);
  if (validate) return validate;
  if (!s.nameSet.has(schemaName)) {
    const close = s.names.filter((n) => n.toLowerCase().includes(schemaName.toLowerCase())).slice(0, 10);
    throw new Error(
      `openapi helper: no schema named ${JSON.stringify(schemaName)}` +
        (close.length ? ` (did you mean ${close.join(', ')}?)` : ''),
    );
  }
  validate = s.ajv.compile({ $ref: `${DOC_ID}#/components/schemas/${schemaName}` });
  s.validators.set(schemaName, validate);
  return validate;
}

function formatError(e: ErrorObject): string {
  const where = e.instancePath === '' ? '(root)' : e.instancePath;
  let detail = '';
  if (e.keyword === 'enum') detail = ` ${JSON.stringify((e.params as { allowedValues?: unknown }).allowedValues)}`;
  if (e.keyword === 'additionalProperties')
    detail = ` (${String((e.params as { additionalProperty?: unknown }).additionalProperty)})`;
  return `  ${where}: ${e.message ?? e.keyword}${detail}  [${e.schemaPath}]`;
}

/**
 * Throws if `value` does not validate against `#/components/schemas/<schemaName>` of openapi.yaml (or the
 * batch-lines.yaml schema of that name). The message lists every violation: instance path, message, schema path.
 */
export function assertMatchesSchema(schemaName: string, value: unknown): void {
  const validate = validatorFor(schemaName);
  if (validate(value)) return;
  const errors = validate.errors ?? [];
  throw new Error(
    `response does not match OpenAI schema ${schemaName}: ${errors.length} violation(s)\n` +
      errors.map(formatError).join('\n') +
      `\nvalue: ${JSON.stringify(value)?.slice(0, 2000)}`,
  );
}

/** Every schema name assertMatchesSchema accepts (openapi.yaml components.schemas plus batch-lines.yaml), sorted. */
export function schemaNames(): string[] {
  return [...load().names];
}
