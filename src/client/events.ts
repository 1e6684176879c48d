/**
 * The server's Server-Sent Events streams (`GET /v1/events`, `GET /v1/jobs/{id}/events`):
 * one `data:` line of JSON per event. A stream that drops is opened again with a backoff;
 * events committed while it was down are not replayed.
 */
import type { DynataskEvent } from '../engine/types.js';
import type { Transport } from './transport.js';

/**
 * Reads an SSE stream of `path` into `listener` until `stop` is called. Reconnects after
 * errors, unless the server answers that the stream does not exist (404). `opened` resolves
 * once the first connection is made (or given up).
 */
export function streamEvents(
  transport: Transport,
  path: string,
  listener: (e: DynataskEvent) => void,
): { stop: () => void; opened: Promise<void> } {
  const abort = new AbortController();
  let open!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  void (async () => {
    for (let failures = 0; !abort.signal.aborted; ) {
      try {
        const res = await transport.agent.request({
          origin: transport.origin,
          path: transport.pathOf(path),
          method: 'GET',
          headers: { accept: 'text/event-stream', ...transport.authHeaders },
          signal: abort.signal,
          // A stream is idle between events (a comment every 15 s keeps it open).
          bodyTimeout: 0,
        });
        if (res.statusCode === 404 || res.statusCode === 405) {
          await res.body.dump();
          open();
          return;
        }
        if (res.statusCode !== 200) {
          await res.body.dump();
          throw new Error(`event stream ${path}: HTTP ${res.statusCode}`);
        }
        failures = 0;
        open();
        let buffer = '';
        let data: string[] = [];
        res.body.setEncoding('utf8');
        for await (const chunk of res.body as AsyncIterable<string>) {
          buffer += chunk;
          for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
            const line = buffer.slice(0, nl).replace(/\r$/, '');
            buffer = buffer.slice(nl + 1);
            if (line === '') {
              // A blank line ends an event.
              if (data.length) {
                try {
                  listener(JSON.parse(data.join('\n')) as DynataskEvent);
                } catch (e) {
                  console.error('dynatask event listener:', e);
                }
              }
              data = [];
            } else if (line.startsWith('data:')) {
              data.push(line.slice(line[5] === ' ' ? 6 : 5));
            }
          }
        }
      } catch {
        if (abort.signal.aborted) break;
      }
      if (abort.signal.aborted) break;
      failures++;
      await new Promise((r) => setTimeout(r, Math.min(5000, 100 * 2 ** failures)));
    }
    open();
  })();
  return { stop: () => abort.abort(), opened };
}
