/**
 * What starts an engine: argv and env. Its own module so the per-engine builders
 * (`commands.ts`, `llamacpp.ts`) can share it without importing each other in a cycle.
 */
export interface EngineCommand {
  command: string;
  args: string[];
  /** Extra environment for the engine, on top of the parent's. */
  env: Record<string, string>;
}
