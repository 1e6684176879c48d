#!/usr/bin/env node
// tsc does not copy .sql files: put the migrations next to the compiled stores in dist/.
import { cpSync } from 'node:fs';

cpSync('src/store/sqlite/migrations', 'dist/store/sqlite/migrations', { recursive: true });
