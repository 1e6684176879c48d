#!/usr/bin/env node
// tsc does not copy .sql files: put each store's migrations next to its compiled code in dist/.
import { cpSync } from 'node:fs';

for (const store of ['sqlite', 'postgres']) {
  cpSync(`src/store/${store}/migrations`, `dist/store/${store}/migrations`, { recursive: true });
}
