/**
 * The property suite (test/properties) on PostgreSQL, one fresh schema per scenario.
 * Fails (does not skip) when no server is given: see test/postgres/server.ts.
 */
import { afterAll } from 'vitest';
import { open } from '../src/index.js';
import { Schemas, withSchema } from './postgres/server.js';
import { propertySuite } from './properties/suite.js';

const schemas = new Schemas();
afterAll(() => schemas.dropAll());

propertySuite('PostgreSQL', async () => {
  const schema = schemas.fresh('prop');
  const database = withSchema(schemas.url, schema);
  return {
    open: ({ leaseMs }) => open({ database, leaseMs }),
    dispose: () => schemas.drop(schema),
  };
});
