/**
 * Whether an error means the database connection was lost or refused. It knows PostgreSQL's
 * error codes and pg's messages without importing pg, so the server can tell "the database is
 * unavailable" (503) from a bug without reaching into a store.
 */

/**
 * Errors of a lost or refused connection (server restarted or shutting down, backend
 * terminated, network): a transaction that had not sent its COMMIT can run again once the
 * server is back.
 */
const CONNECTION_CODES = new Set([
  '57P01', // admin_shutdown: pg_terminate_backend, fast shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now: starting up or shutting down
  '08000', // connection_exception
  '08001', // sqlclient_unable_to_establish_sqlconnection
  '08003', // connection_does_not_exist
  '08004', // sqlserver_rejected_establishment_of_sqlconnection
  '08006', // connection_failure
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  'ETIMEDOUT',
  'ENOENT', // the unix socket is gone while the server restarts
]);

/** A lost or refused connection: what ran before COMMIT may run again once the server is back. */
export function isConnectionError(e: unknown): boolean {
  const code = (e as { code?: unknown })?.code;
  if (typeof code === 'string' && CONNECTION_CODES.has(code)) return true;
  // pg's own errors for a connection that ended or broke carry no code.
  return /Connection terminated|connection error|not queryable|Connection ended/i.test(
    (e as Error)?.message ?? '',
  );
}
