// openai.ts - the OpenAI API's request schemas (checked by Fastify's ajv) and
// response shapes: chat.completion, chat.completion.chunk, text_completion,
// and the error body { error: { message, type, param, code } }.
//
// Unknown request fields are rejected. Fields OpenAI clients commonly send are
// accepted when they ask for what sparq does anyway: `n` 1, penalties 0,
// `logprobs` false / null, `response_format` text, `echo` false, `best_of` 1.
// Optional fields may be null (as in OpenAI's API). `top_k` is an extension.
import { randomBytes } from 'node:crypto';

export type ErrorType = 'invalid_request_error' | 'authentication_error' | 'not_found_error' | 'rate_limit_exceeded' | 'server_error';

export interface OpenAIErrorBody {
  error: { message: string; type: ErrorType; param: string | null; code: string | null };
}

export function errorBody(message: string, type: ErrorType, param: string | null = null, code: string | null = null): OpenAIErrorBody {
  return { error: { message, type, param, code } };
}

/** An error a handler throws to answer with `status` and an OpenAI error body. */
export class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly type: ErrorType = 'invalid_request_error', readonly param: string | null = null,
              readonly code: string | null = null, readonly headers: Record<string, string> = {}) {
    super(message);
    this.name = 'HttpError';
  }

  get body(): OpenAIErrorBody {
    return errorBody(this.message, this.type, this.param, this.code);
  }
}

const orNull = (type: string | string[]) => [...(Array.isArray(type) ? type : [type]), 'null'];

/** The sampling and stopping fields both endpoints take. */
const common = (maxTokensField: Record<string, unknown>) => ({
  model: { type: 'string' },
  ...maxTokensField,
  temperature: { type: orNull('number'), minimum: 0, maximum: 2 },
  top_p: { type: orNull('number'), minimum: 0, maximum: 1 },
  top_k: { type: orNull('integer'), minimum: -1 },
  seed: { type: orNull('integer') },
  // stop strings up to 256 characters (each token's hold-back check looks back that far)
  stop: { type: orNull(['string', 'array']), minLength: 1, maxLength: 256, maxItems: 4, items: { type: 'string', minLength: 1, maxLength: 256 } },
  n: { type: orNull('integer'), enum: [1, null] },
  stream: { type: orNull('boolean') },
  stream_options: {
    type: orNull('object'), additionalProperties: false,
    properties: { include_usage: { type: 'boolean' }, include_obfuscation: { type: 'boolean' } },
  },
  user: { type: 'string' },
  frequency_penalty: { type: orNull('number'), enum: [0, null] },
  presence_penalty: { type: orNull('number'), enum: [0, null] },
});

const tokenLimit = { type: orNull('integer'), minimum: 1 };

const message = {
  type: 'object',
  required: ['role', 'content'],
  additionalProperties: false,
  properties: {
    role: { type: 'string', enum: ['system', 'developer', 'user', 'assistant'] },
    content: {
      type: ['string', 'array'],
      items: {
        type: 'object', required: ['type', 'text'], additionalProperties: false,
        properties: { type: { type: 'string', enum: ['text'] }, text: { type: 'string' } },
      },
    },
    name: { type: 'string' },
  },
};

export const chatSchema = {
  type: 'object',
  required: ['messages'],
  additionalProperties: false,
  properties: {
    ...common({ max_tokens: tokenLimit, max_completion_tokens: tokenLimit }),
    messages: { type: 'array', minItems: 1, items: message },
    logprobs: { type: orNull('boolean'), enum: [false, null] },
    response_format: {
      type: orNull('object'), additionalProperties: false, required: ['type'],
      properties: { type: { type: 'string', enum: ['text'] } },
    },
  },
};

export const completionSchema = {
  type: 'object',
  required: ['prompt'],
  additionalProperties: false,
  properties: {
    ...common({ max_tokens: tokenLimit }),
    // a string, a token id array, or an array holding one string
    prompt: { type: ['string', 'array'], minItems: 1, items: { type: ['integer', 'string'], minimum: 0 } },
    echo: { type: orNull('boolean'), enum: [false, null] },
    best_of: { type: orNull('integer'), enum: [1, null] },
    logprobs: { enum: [null] },
    suffix: { enum: [null] },
  },
};

/** The fields of a request both endpoints read (after validation). */
export interface SamplingRequest {
  model?: string;
  max_tokens?: number | null;
  max_completion_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number | null;
  seed?: number | null;
  stop?: string | string[] | null;
  stream?: boolean | null;
  stream_options?: { include_usage?: boolean } | null;
}

export interface ChatRequest extends SamplingRequest {
  messages: { role: string; content: string | { type: 'text'; text: string }[]; name?: string }[];
}

export interface CompletionRequest extends SamplingRequest {
  prompt: string | (number | string)[];
}

// what the accepted-if-default fields allow, for their messages
const ONLY: Record<string, string> = {
  n: 'only 1 choice per request is supported (send n requests)',
  frequency_penalty: 'only 0 is supported (sparq applies no penalties)',
  presence_penalty: 'only 0 is supported (sparq applies no penalties)',
  logprobs: 'log probabilities are not supported',
  echo: 'only false is supported',
  best_of: 'only 1 is supported',
  suffix: 'suffixes are not supported',
  response_format: 'only { "type": "text" } is supported',
};

interface AjvError {
  instancePath: string;
  keyword: string;
  params: Record<string, unknown>;
  message?: string;
}

/** '/messages/0/role' -> 'messages[0].role' */
function paramOf(instancePath: string): string {
  return instancePath.split('/').filter(Boolean).reduce((s, p) => (/^\d+$/.test(p) ? `${s}[${p}]` : s ? `${s}.${p}` : p), '');
}

/** An ajv error (the first one Fastify reports) as an OpenAI error. */
export function validationError(errors: AjvError[]): HttpError {
  const e = errors[0];
  if (!e) return new HttpError(400, 'the request body is invalid');
  let param = paramOf(e.instancePath);
  if (e.keyword === 'additionalProperties') {
    const extra = String(e.params.additionalProperty);
    const where = param ? `${param}.${extra}` : extra;
    return new HttpError(400, `Unrecognized request argument supplied: ${where}`, 'invalid_request_error', where, 'unknown_parameter');
  }
  if (e.keyword === 'required') {
    const missing = String(e.params.missingProperty);
    const where = param ? `${param}.${missing}` : missing;
    return new HttpError(400, `Missing required parameter: '${where}'.`, 'invalid_request_error', where, 'missing_required_parameter');
  }
  const top = param.split(/[.[]/)[0]!;
  if (e.keyword === 'enum' && ONLY[top]) return new HttpError(400, `${param}: ${ONLY[top]}`, 'invalid_request_error', param, 'unsupported_value');
  if (e.keyword === 'type' && e.instancePath === '') return new HttpError(400, 'the request body must be a JSON object', 'invalid_request_error', null, 'invalid_type');
  if (e.keyword === 'type') param = param || 'body';
  const what = e.keyword === 'type' ? `must be of type ${String(e.params.type).split(',').join(' or ')}` : (e.message ?? 'is invalid');
  return new HttpError(400, `Invalid value for '${param}': ${what}.`, 'invalid_request_error', param, e.keyword === 'type' ? 'invalid_type' : 'invalid_value');
}

/** `chatcmpl-` / `cmpl-` and 24 random letters and digits */
export function completionId(prefix: string): string {
  const abc = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  const b = randomBytes(24);
  let s = prefix;
  for (const x of b) s += abc[x % abc.length];
  return s;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export const usageOf = (prompt: number, completion: number): Usage => ({ prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion });
