/**
 * Rendering an animation: one task per frame, each frame handing its image to a
 * post-processing child, with live progress.
 *
 * A frame renders its tiles and reports each one with `ctx.progress`; this process prints the
 * overall progress from the `progress` events it receives with `dt.subscribe`. Rendering is
 * the expensive part, so it runs in `ctx.step`: when the frame's handler runs again after
 * waiting for its post-processing, the step returns the stored image instead of rendering
 * it again. Run it with `npx tsx examples/render.ts [frames]` (8 by default).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { open } from 'dynatask';

const FRAMES = Number(process.argv[2] ?? 8);
if (!Number.isInteger(FRAMES) || FRAMES < 1)
  throw new Error(`frames must be a positive integer, not ${process.argv[2]}`);
const TILES = 4;

type Frame = { frame: number; checksum: number };
type Tasks = {
  render: { payload: { scene: string; frames: number }; result: { frames: number[]; checksum: number } };
  frame: { payload: { scene: string; frame: number }; result: Frame };
  postprocess: { payload: Frame; result: Frame };
};

/** A stand-in for pixels: a 32-bit FNV-1a hash of whatever went into the image. */
function hash(...parts: Array<string | number>): number {
  let h = 0x811c9dc5;
  for (const c of parts.join('/')) h = Math.imul(h ^ c.charCodeAt(0), 0x01000193) >>> 0;
  return h;
}

// Counted in this process, to show what the steps saved: renders stays at one per frame
// although the frame handler runs twice (before and after waiting for its post-processing).
let renders = 0;
let frameRuns = 0;

const dt = await open<Tasks>();

dt.handle('render', async (ctx, { scene, frames }) => {
  const children = await ctx.spawnMany(
    Array.from({ length: frames }, (_, frame) => ({ type: 'frame' as const, payload: { scene, frame } })),
  );
  const done = await ctx.waitAll<Frame>(children);
  return { frames: done.map((f) => f.frame), checksum: hash(...done.map((f) => f.checksum)) };
});

dt.handle('frame', async (ctx, { scene, frame }) => {
  frameRuns++;
  const image = await ctx.step('render', async () => {
    renders++;
    let checksum = 0;
    for (let tile = 1; tile <= TILES; tile++) {
      await sleep(5, undefined, { signal: ctx.signal }); // the expensive part
      checksum = hash(checksum, scene, frame, tile);
      await ctx.progress({ frame, tile, tiles: TILES });
    }
    return { frame, checksum };
  });
  const post = await ctx.spawn('postprocess', image);
  // Suspends until the post-processing has settled, then the handler runs again from the top:
  // the step above returns the stored image, the spawn returns the same child.
  const [final] = await ctx.waitAll<Frame>([post]);
  return final!;
});

dt.handle('postprocess', async (ctx, { frame, checksum }) => {
  await sleep(10, undefined, { signal: ctx.signal }); // denoise, colour-grade, encode
  return { frame, checksum: hash('graded', checksum) };
});

// Events of the transitions committed by this process, in commit order. Subscribe before
// submitting so no event of the job is missed (this process runs only this job).
const tiles = new Map<string, number>(); // frame task id -> tiles rendered
const frameOf = new Map<string, number>(); // frame task id -> frame number
let printed = 0;
let framesDone = 0;
dt.subscribe((e) => {
  if (e.kind === 'progress' && e.type === 'frame') {
    const { frame, tile } = e.progress as { frame: number; tile: number };
    tiles.set(e.taskId, tile);
    frameOf.set(e.taskId, frame);
    const pct = Math.floor((100 * [...tiles.values()].reduce((a, b) => a + b, 0)) / (FRAMES * TILES));
    if (pct >= printed + 10 || pct === 100) {
      console.log(`rendering ${String(pct).padStart(3)}% (frame ${frame}, tile ${tile}/${TILES})`);
      printed = pct;
    }
  } else if (e.kind === 'task' && e.type === 'frame' && e.state === 'succeeded') {
    framesDone++;
    console.log(`frame ${frameOf.get(e.taskId)} done (${framesDone}/${FRAMES})`);
  }
});

await dt.start();
const job = await dt.submit('render', { scene: 'teapot', frames: FRAMES });
const { frames, checksum } = await job.result();
await dt.close();

console.log(`rendered frames: ${frames.join(' ')}`);
console.log(`checksum: ${checksum.toString(16)}`);
console.log(`renders: ${renders}, frame handler runs: ${frameRuns}`);
