/**
 * Request validation against the route's TypeBox schema. Bodies are JSON and are checked as
 * they are. Query strings and path parameters are text, so a value is converted where the
 * schema wants a number or a boolean, but only from its own spelling: `limit=10` is 10, while
 * `limit=true` or `limit=` stays text and is refused (TypeBox's own conversion would turn
 * `true` into 1 and accept it).
 */
import type { FastifySchemaCompiler, FastifySchemaValidationError } from 'fastify';
import type { TSchema } from 'typebox';
import { Compile } from 'typebox/compile';

const INTEGER = /^-?\d+$/;
const NUMBER = /^-?\d+(\.\d+)?([eE][-+]?\d+)?$/;

/** One query or path value, converted if its text spells the type the schema wants. */
function convert(schema: unknown, value: unknown): unknown {
  if (typeof value !== 'string' || schema === null || typeof schema !== 'object') return value;
  const type = (schema as { type?: unknown }).type;
  if (type === 'integer' && INTEGER.test(value)) return Number(value);
  if (type === 'number' && NUMBER.test(value)) return Number(value);
  if (type === 'boolean' && (value === 'true' || value === 'false')) return value === 'true';
  return value;
}

/** The properties of a query or params object, each converted by its own schema. */
function convertObject(schema: TSchema, value: unknown): unknown {
  const props = (schema as { properties?: Record<string, unknown> }).properties;
  if (!props || value === null || typeof value !== 'object' || Array.isArray(value)) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = convert(props[k], v);
  return out;
}

/** Fastify's validator compiler: TypeBox checks, with the strict conversion above for text parts. */
export const validatorCompiler: FastifySchemaCompiler<TSchema> = ({ schema, httpPart }) => {
  const check = Compile(schema);
  return (value) => {
    const converted = httpPart === 'body' ? value : convertObject(schema, value);
    if (check.Check(converted)) return { value: converted };
    return { error: check.Errors(converted) as unknown as FastifySchemaValidationError[] };
  };
};
