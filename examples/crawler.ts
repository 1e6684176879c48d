/**
 * A web crawler: one `fetch` task per unique URL, at most two fetches per host at once.
 *
 * The "site" is a map from URL to the links on that page, so the example needs no network.
 * A page that links to a URL another page has already found spawns it with the same
 * `dedupKey`, and gets the existing task back instead of a second fetch. Run it with
 * `npx tsx examples/crawler.ts`.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { open } from 'dynatask';

// URL -> links on the page. Pages link back and to each other; /missing is a broken link.
const SITE: Record<string, string[]> = {
  'https://shop.example/': [
    'https://shop.example/about',
    'https://shop.example/cart',
    'https://shop.example/p/1',
    'https://shop.example/p/2',
    'https://shop.example/p/3',
    'https://shop.example/p/4',
    'https://blog.example/',
  ],
  'https://shop.example/about': ['https://shop.example/', 'https://blog.example/'],
  'https://shop.example/cart': ['https://shop.example/'],
  'https://shop.example/p/1': ['https://shop.example/p/2', 'https://shop.example/cart'],
  'https://shop.example/p/2': ['https://shop.example/p/1', 'https://shop.example/missing'],
  'https://shop.example/p/3': ['https://shop.example/p/4', 'https://blog.example/review-p3'],
  'https://shop.example/p/4': ['https://shop.example/p/3'],
  'https://blog.example/': ['https://blog.example/review-p3', 'https://shop.example/'],
  'https://blog.example/review-p3': ['https://shop.example/p/3', 'https://blog.example/'],
};

type Crawl = { pages: string[]; broken: string[] };
type Tasks = {
  crawl: { payload: { start: string }; result: Crawl };
  fetch: { payload: { url: string }; result: Crawl };
};

// What the crawl did, watched from this process: fetches per URL, and the most fetches that
// ran at once per host (the per-host limit below keeps it at 2 or less).
const fetches = new Map<string, number>();
const running = new Map<string, number>();
const maxRunning = new Map<string, number>();

/** A stand-in for an HTTP GET: 20 ms per page, aborted with the task. */
async function get(url: string, signal: AbortSignal): Promise<{ status: number; links: string[] }> {
  const host = new URL(url).host;
  fetches.set(url, (fetches.get(url) ?? 0) + 1);
  running.set(host, (running.get(host) ?? 0) + 1);
  maxRunning.set(host, Math.max(maxRunning.get(host) ?? 0, running.get(host)!));
  try {
    await sleep(20, undefined, { signal });
    const links = SITE[url];
    return links ? { status: 200, links } : { status: 404, links: [] };
  } finally {
    running.set(host, running.get(host)! - 1);
  }
}

/** Spawn options of the fetch of `url`. */
function fetchOptions(url: string) {
  return {
    dedupKey: url, // one task per URL in the whole job, whichever page linked to it first
    concurrency: { key: new URL(url).host, limit: 2 }, // be polite: two requests per host at once
  };
}

const dt = await open<Tasks>();

dt.handle('crawl', async (ctx, { start }) => {
  const root = await ctx.spawn('fetch', { url: start }, fetchOptions(start));
  // Durable wait for the whole crawl: the root resumes once every page below it has settled.
  const [crawl] = await ctx.waitAll<Crawl>([root]);
  return { pages: crawl!.pages.sort(), broken: crawl!.broken.sort() };
});

dt.handle('fetch', async (ctx, { url }) => {
  // The handler runs again after its wait: the step keeps the page from being fetched twice.
  const page = await ctx.step('get', () => get(url, ctx.signal));
  if (page.status !== 200) return { pages: [], broken: [url] };

  const links = await ctx.spawnMany(
    page.links.map((link) => ({ type: 'fetch', payload: { url: link }, options: fetchOptions(link) })),
  );
  // A link found before (anywhere in the job) returns the task of the page that spawned it
  // first: that page waits for it and counts it, so each page is counted exactly once.
  const mine = links.filter((h) => h.parentId === ctx.task.id);
  const below = await ctx.waitAll<Crawl>(mine);
  return {
    pages: [url, ...below.flatMap((c) => c.pages)],
    broken: below.flatMap((c) => c.broken),
  };
});

await dt.start();
const job = await dt.submit('crawl', { start: 'https://shop.example/' });
const { pages, broken } = await job.result();
await dt.close();

console.log(`pages found: ${pages.length}`);
for (const page of pages) console.log(`  ${page}`);
console.log(`broken links: ${broken.join(', ')}`);
const counts = [...fetches.values()];
console.log(
  `fetches: ${counts.reduce((a, b) => a + b, 0)} (repeated: ${counts.filter((n) => n > 1).length})`,
);
for (const [host, n] of maxRunning) console.log(`most fetches at once on ${host}: ${n}`);
