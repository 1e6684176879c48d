import { open } from 'dynatask';

// Task types with their payload and result types: handlers, spawns and submissions are typed by them.
type Tasks = {
  ingest: { payload: { file: string; lines: string[] }; result: { rows: number; invalid: number } };
  chunk: { payload: { lines: string[] }; result: { rows: number; invalid: number } };
};

// Embedded SQLite: .dynatask/dynatask.db in the working directory, or $DYNATASK_DATABASE_URL.
const dt = await open<Tasks>();

dt.handle('ingest', async (ctx, { lines }) => {
  const chunks: string[][] = [];
  for (let i = 0; i < lines.length; i += 2) chunks.push(lines.slice(i, i + 2));
  const children = await ctx.spawnMany(chunks.map((c) => ({ type: 'chunk', payload: { lines: c } })));
  // Durable wait: the worker slot is freed until every chunk has settled; then this handler
  // runs again from the top, the spawn above returns the same children, and waitAll their results.
  const results = await ctx.waitAll<Tasks['chunk']['result']>(children);
  return {
    rows: results.reduce((n, r) => n + r.rows, 0),
    invalid: results.reduce((n, r) => n + r.invalid, 0),
  };
});

dt.handle('chunk', async (_ctx, { lines }) => {
  const invalid = lines.filter((line) => line.split(',').length !== 3).length;
  return { rows: lines.length - invalid, invalid };
});

await dt.start();
const job = await dt.submit('ingest', {
  file: 'data.csv',
  lines: ['a,1,2', 'b,3,4', 'oops', 'c,5,6', 'd,7,8'],
});
console.log(await job.result()); // { rows: 4, invalid: 1 }
await dt.close();
