/** Operations: liveness, readiness, Prometheus metrics and the OpenAPI document. */
import type { ServerContext } from '../context.js';
import { HttpError } from '../errors.js';
import { HealthReply } from '../schemas.js';
import { errors, type Typed } from './common.js';

export function opsRoutes(app: Typed, ctx: ServerContext): void {
  const tags = ['operations'];

  app.get(
    '/healthz',
    {
      config: { access: 'none' },
      schema: {
        operationId: 'health',
        tags,
        summary: 'The process is up',
        security: [],
        response: { 200: HealthReply },
      },
    },
    async () => ({ status: 'ok' }),
  );

  app.get(
    '/readyz',
    {
      config: { access: 'none' },
      schema: {
        operationId: 'ready',
        tags,
        summary: 'The store answers; 503 while draining or when it does not',
        security: [],
        response: { 200: HealthReply, ...errors(503) },
      },
    },
    async (req) => {
      if (ctx.draining) throw new HttpError(503, 'unavailable', 'shutting down');
      try {
        await ctx.store.getJob('00000000-0000-0000-0000-000000000000');
      } catch (err) {
        req.log.warn({ err }, 'readiness: the store did not answer');
        throw new HttpError(503, 'unavailable', 'the database did not answer');
      }
      return { status: 'ready' };
    },
  );

  app.get(
    '/metrics',
    {
      config: { access: 'read' },
      schema: {
        operationId: 'metrics',
        tags,
        summary: 'Prometheus metrics (text exposition format)',
        response: {
          200: { description: 'Prometheus text', content: { 'text/plain': { schema: { type: 'string' } } } },
          ...errors(401, 403),
        },
      },
    },
    async (_req, reply) => {
      const text = await ctx.metrics.registry.metrics();
      return reply.type(ctx.metrics.registry.contentType).send(text);
    },
  );

  app.get('/openapi.json', { config: { access: 'any' }, schema: { hide: true } }, async () =>
    (app as unknown as { swagger(): unknown }).swagger(),
  );
}
