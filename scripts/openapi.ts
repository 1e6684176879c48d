// `npm run openapi`: writes openapi.json (the HTTP API's OpenAPI 3.1 document) from the
// server's route schemas. test/server.openapi.test.ts fails when the committed file differs.
import { writeFileSync } from 'node:fs';
import { openApiDocument } from '../src/server/openapi.js';

const file = new URL('../openapi.json', import.meta.url);
writeFileSync(file, await openApiDocument());
console.log(`wrote ${file.pathname}`);
