/**
 * Who is calling. `null` means the server runs with no API keys configured (open mode): every
 * caller is the same anonymous user and sees everything.
 */
export interface Principal {
  keyId: string;
  /** Files and batches belong to a project; every key of a project sees the same ones. */
  project: string;
  /** Operators: the operator API (/ops), the dashboard, and every project's batches and files. */
  admin: boolean;
}

/** The owner to record on something this caller creates. */
export function ownerFor(p: Principal | null): string | null {
  return p ? p.project : null;
}

/**
 * Whether the caller may see a file or batch. Callers that may not get 404 (never 403), so a
 * key cannot even learn that another project's id exists.
 */
export function canSee(p: Principal | null, owner: string | null): boolean {
  if (!p || p.admin) return true;
  return owner === p.project;
}

/** The owner a list is narrowed to: a project key sees its project; admins and open mode everything (undefined). */
export function listScope(p: Principal | null): string | undefined {
  return p && !p.admin ? p.project : undefined;
}
