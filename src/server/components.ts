/**
 * Named schemas for the OpenAPI document. Route schemas are written inline (the validator
 * compiles each on its own); for SDK generators, every schema with a `title` is moved to
 * `components.schemas` under that title and referenced from where it was, so TaskInfo,
 * ClaimedTask and the rest become named types in every language.
 */

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** Moves titled schemas under `paths` into `components.schemas`; titles must name one schema each. */
export function hoistTitledSchemas<T extends { paths?: unknown; components?: unknown }>(doc: T): T {
  const named: Record<string, Json> = {};
  const walk = (node: Json): Json => {
    if (Array.isArray(node)) return node.map(walk);
    if (node === null || typeof node !== 'object') return node;
    const out: { [k: string]: Json } = {};
    for (const [k, v] of Object.entries(node)) out[k] = walk(v);
    const title = out.title;
    if (
      typeof title === 'string' &&
      ('type' in out || 'anyOf' in out || 'properties' in out || 'enum' in out)
    ) {
      // The same schema may carry a different description where it is used (e.g. per status):
      // the description stays beside the reference, which OpenAPI 3.1 allows.
      const { title: _, description, ...schema } = out;
      const seen = named[title];
      if (seen !== undefined && JSON.stringify(seen) !== JSON.stringify(schema))
        throw new Error(`OpenAPI: two different schemas are titled ${title}`);
      named[title] = schema;
      const ref: { [k: string]: Json } = { $ref: `#/components/schemas/${title}` };
      if (description !== undefined) ref.description = description;
      return ref;
    }
    return out;
  };
  const paths = walk(doc.paths as Json);
  const components = { ...(doc.components as Record<string, unknown>) };
  const sorted = Object.fromEntries(Object.entries(named).sort(([a], [b]) => (a < b ? -1 : 1)));
  components.schemas = { ...(components.schemas as Record<string, unknown>), ...sorted };
  return { ...doc, paths, components };
}

/**
 * The document of a server without tokens: no security scheme or requirement, and no 401 or
 * 403 answers, so a client generated from it sends no token that does not exist.
 */
export function withoutAuth<T extends { paths?: unknown; components?: unknown }>(doc: T): T {
  const { security: _, ...rest } = doc as T & { security?: unknown };
  const { securitySchemes: __, ...components } = (doc.components ?? {}) as Record<string, unknown>;
  const paths: Record<string, Record<string, unknown>> = {};
  for (const [path, methods] of Object.entries((doc.paths ?? {}) as Record<string, Record<string, Json>>)) {
    paths[path] = {};
    for (const [method, op] of Object.entries(methods)) {
      if (op === null || typeof op !== 'object' || Array.isArray(op)) {
        paths[path][method] = op;
        continue;
      }
      const { security: ___, responses, ...fields } = op as { [k: string]: Json };
      const kept = Object.fromEntries(
        Object.entries((responses ?? {}) as Record<string, Json>).filter(
          ([status]) => status !== '401' && status !== '403',
        ),
      );
      paths[path][method] = responses === undefined ? fields : { ...fields, responses: kept };
    }
  }
  return { ...rest, components, paths } as unknown as T;
}
