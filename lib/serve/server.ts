// server.ts - an OpenAI-compatible HTTP server over one Model (`npx sparq
// serve`), on Fastify: POST /v1/chat/completions, POST /v1/completions
// (streamed as server-sent events or whole), GET /v1/models, GET /health.
// Requests are checked against JSON schemas (openai.ts) and against the
// model's context before they queue; at most `maxSequences` generate at once
// (the model batches them), `queue` more wait, and past that the answer is
// 429 with Retry-After. A client that goes away aborts its generation. Every
// error is an OpenAI error body; no request can take the process down.
import * as path from 'node:path';
import { createHash, timingSafeEqual } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { loadModel, type GeneratedToken, type LoadModelOptions, type Model } from '../model/model';
import { renderChat, type ChatMessage } from '../model/chat';
import { Admission, QueueFullError } from './queue';
import {
  HttpError, chatSchema, completionId, completionSchema, errorBody, usageOf, validationError,
  type ChatRequest, type CompletionRequest, type SamplingRequest, type Usage,
} from './openai';

export interface ServeOptions {
  /** TCP port (default 8080; 0: any free port, see ModelServer.port) */
  port?: number;
  /** address to bind (default '127.0.0.1': this machine only; '0.0.0.0' for every interface) */
  host?: string;
  /** the id /v1/models lists and responses name (default: the model file's base name) */
  modelId?: string;
  /** when set, /v1/* requests need `Authorization: Bearer <apiKey>` (/health stays open) */
  apiKey?: string;
  /** generations run at once (default: the model's maxSequences, else 1) */
  maxSequences?: number;
  /** requests that may wait for a free sequence beyond those (default 4 x maxSequences); more get 429 */
  queue?: number;
  /** a Jinja chat template for /v1/chat/completions (default: the model's own; without either, chat answers 400) */
  template?: string;
  /** Fastify's request log (pino JSON lines on stdout; default false) */
  logger?: boolean;
  /** largest request body in bytes (default 8 MiB) */
  bodyLimit?: number;
}

export interface ServerHealth {
  /** 'closing' (with HTTP 503) once close() began: a readiness probe takes the replica out */
  status: 'ok' | 'closing';
  model: string;
  /** context length per sequence */
  maxSeq: number;
  maxSequences: number;
  /** requests allowed to wait for a sequence */
  queueLimit: number;
  /** generations running now, requests waiting */
  active: number;
  queued: number;
  /** native bytes the model holds (weights and KV cache) */
  nativeBytes?: number;
  /** bytes of the KV cache, when the model reports them */
  kvCacheBytes?: number;
  /** since start: requests answered, turned away with 429, failed with a server error, and left by their client */
  requests: { completed: number; rejected: number; failed: number; aborted: number };
}

export interface ModelServer {
  /** the Fastify instance (add routes or hooks before traffic arrives) */
  app: FastifyInstance;
  /** e.g. http://127.0.0.1:8080 (the OpenAI base URL is `${url}/v1`) */
  url: string;
  port: number;
  model: Model;
  modelId: string;
  health(): ServerHealth;
  /**
   * Stops taking requests (new ones get 503, /health too), lets running and queued ones
   * finish for up to `drainSeconds` (default 30), aborts what is left, closes the
   * listener and, for a server made by serve(), disposes the model.
   */
  close(opts?: { drainSeconds?: number }): Promise<void>;
}

/** Why a generation stopped early: its client went away, or the server is shutting down. */
class Gone extends Error {
  constructor(readonly shutdown: boolean) {
    super(shutdown ? 'the server is shutting down' : 'the client closed the connection');
    this.name = 'AbortError';
  }
}

const shuttingDown = () => new HttpError(503, 'the server is shutting down; retry on another replica', 'server_error', null, 'shutting_down');

type Kind = 'chat' | 'completion';

/** A validated request: what to run and how to report it. */
interface Job {
  kind: Kind;
  messages?: ChatMessage[];
  ids?: number[];
  promptTokens: number;
  maxTokens: number;
  stop?: string[];
  sampling: { temperature: number; topP: number; topK: number; seed?: number };
  stream: boolean;
  includeUsage: boolean;
}

function positiveInt(v: unknown, name: string, min: number): number {
  if (!Number.isInteger(v) || (v as number) < min) throw new RangeError(`createServer: ${name} must be an integer >= ${min}; got ${String(v)}`);
  return v as number;
}

/**
 * Serves `model` over HTTP (OpenAI's API) and resolves once it listens. Concurrent
 * requests run as concurrent generate() / chat() calls on the model, which decodes
 * them together up to its maxSequences.
 */
export async function createServer(model: Model, opts: ServeOptions = {}): Promise<ModelServer> {
  return start(model, opts, false);
}

/** Loads a model file (loadModel with `maxSequences`, default 8) and serves it; close() disposes it. */
export async function serve(file: string, opts: ServeOptions & LoadModelOptions = {}): Promise<ModelServer> {
  const { port, host, modelId, apiKey, queue, template, logger, bodyLimit, ...load } = opts;
  const maxSequences = load.maxSequences ?? 8;
  const model = await loadModel(file, { ...load, maxSequences });
  try {
    return await start(model, { port, host, modelId: modelId ?? path.basename(file), apiKey, queue, template, logger, bodyLimit, maxSequences }, true);
  } catch (e) {
    model.dispose();
    throw e;
  }
}

async function start(model: Model, opts: ServeOptions, ownsModel: boolean): Promise<ModelServer> {
  if (typeof opts !== 'object' || opts === null) throw new TypeError('createServer: options must be an object');
  const declared = (model as { maxSequences?: unknown }).maxSequences ?? model._source?.opts.maxSequences;
  const slots = positiveInt(opts.maxSequences ?? (typeof declared === 'number' ? declared : 1), 'maxSequences', 1);
  const queueLimit = positiveInt(opts.queue ?? 4 * slots, 'queue', 0);
  const port = positiveInt(opts.port ?? 8080, 'port', 0);
  const host = opts.host ?? '127.0.0.1';
  const modelId = opts.modelId ?? (model._source ? path.basename(model._source.file) : 'sparq');
  const template = opts.template;
  if (template !== undefined && (typeof template !== 'string' || template.length === 0)) throw new TypeError('createServer: template must be a non-empty string');
  const apiKey = opts.apiKey;
  if (apiKey !== undefined && (typeof apiKey !== 'string' || apiKey.length === 0)) throw new TypeError('createServer: apiKey must be a non-empty string');
  const keyHash = apiKey === undefined ? null : createHash('sha256').update(apiKey).digest();
  const maxSeq = model.config.maxSeq;
  const created = Math.floor(Date.now() / 1000);

  const { default: Fastify } = await import('fastify');
  const app = Fastify({
    logger: opts.logger ?? false,
    bodyLimit: opts.bodyLimit ?? 8 * 2 ** 20,
    // close() runs once the generations are drained or aborted: then every connection
    // goes, idle keep-alive ones and ones a client opened without sending a request
    forceCloseConnections: true,
    // unknown fields are errors, types are not coerced ("8" is not 8)
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: false, allErrors: false, strictTypes: false } },
  });

  const admission = new Admission(slots, queueLimit);
  const inflight = new Set<AbortController>();
  const counts = { completed: 0, rejected: 0, failed: 0, aborted: 0 };
  let closing = false;
  let closed: Promise<void> | null = null;

  const health = (): ServerHealth => {
    const h: ServerHealth = {
      status: closing ? 'closing' : 'ok', model: modelId, maxSeq, maxSequences: slots, queueLimit,
      active: admission.active, queued: admission.queued, requests: { ...counts },
    };
    try {
      h.nativeBytes = model.nativeBytes;
      const kv = (model as { kvCacheBytes?: unknown }).kvCacheBytes;
      if (typeof kv === 'number') h.kvCacheBytes = kv;
    } catch {
      /* a disposed model (shutting down) */
    }
    return h;
  };

  app.addHook('onRequest', async (req: FastifyRequest) => {
    // by the route matched, not the raw URL: the router decodes the path first, so
    // '/%761/...' reaches /v1/... (unknown URLs need the key too)
    if (keyHash === null || req.routeOptions.url === '/health') return;
    const m = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '');
    const got = m ? createHash('sha256').update(m[1]!.trim()).digest() : null;
    if (!got || !timingSafeEqual(got, keyHash)) {
      throw new HttpError(401, m ? 'Incorrect API key provided.' : 'You didn\'t provide an API key: send it as `Authorization: Bearer KEY`.',
        'authentication_error', null, 'invalid_api_key');
    }
  });

  app.setErrorHandler((err: Error & { validation?: unknown; statusCode?: number; code?: string }, req, reply) => {
    let e: HttpError;
    if (err instanceof HttpError) e = err;
    else if (Array.isArray(err.validation)) e = validationError(err.validation);
    else if (err.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || err.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || err instanceof SyntaxError) {
      e = new HttpError(400, `We could not parse the JSON body of your request: ${err.message}`, 'invalid_request_error', null, 'invalid_json');
    } else if (err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500) {
      e = new HttpError(err.statusCode, err.message, 'invalid_request_error', null, err.code?.replace(/^FST_ERR_(CTP_)?/, '').toLowerCase() ?? null);
    } else {
      req.log.error(err);
      counts.failed++;
      e = new HttpError(500, `The server had an error while processing your request: ${err.message}`, 'server_error', null, null);
    }
    if (e.status === 429) counts.rejected++;
    void reply.code(e.status).headers(e.headers).send(e.body);
  });

  app.setNotFoundHandler((req, reply) => {
    void reply.code(404).send(errorBody(`Invalid URL (${req.method} ${req.url.split('?')[0]})`, 'invalid_request_error', null, 'unknown_url'));
  });

  app.get('/health', async (_req, reply) => {
    const h = health();
    return reply.code(h.status === 'ok' ? 200 : 503).send(h);
  });

  const modelObject = () => ({ id: modelId, object: 'model', created, owned_by: 'sparq' });
  app.get('/v1/models', async () => ({ object: 'list', data: [modelObject()] }));
  app.get('/v1/models/:id', async (req) => {
    const id = (req.params as { id: string }).id;
    if (id !== modelId) throw new HttpError(404, `The model '${id}' does not exist`, 'invalid_request_error', 'model', 'model_not_found');
    return modelObject();
  });

  // ---- requests -> jobs ----

  const samplingOf = (b: SamplingRequest): Job['sampling'] => {
    const topP = b.top_p ?? 1, temperature = b.temperature ?? 1;
    return {
      temperature: topP === 0 ? 0 : temperature,  // top_p 0: the single most likely token
      topP: topP === 0 ? 1 : topP,
      topK: b.top_k === null || b.top_k === undefined || b.top_k < 0 ? 0 : b.top_k,
      ...(b.seed === null || b.seed === undefined ? {} : { seed: b.seed >>> 0 }),
    };
  };

  const checkMaxTokens = (v: number | null | undefined, field: string) => {
    if (v !== null && v !== undefined && v > maxSeq) {
      throw new HttpError(400, `${field} is ${v}, more than the model's context of ${maxSeq} tokens.`, 'invalid_request_error', field, 'invalid_value');
    }
  };

  const checkPrompt = (n: number, field: string) => {
    if (n > maxSeq) {
      throw new HttpError(400, `This model's maximum context length is ${maxSeq} tokens; your ${field === 'messages' ? 'messages' : 'prompt'} ` +
        `came to ${n} tokens. Shorten it.`, 'invalid_request_error', field, 'context_length_exceeded');
    }
  };

  const stopOf = (s: SamplingRequest['stop']) => (s === null || s === undefined ? undefined : typeof s === 'string' ? [s] : s.length ? s : undefined);

  const chatJob = (b: ChatRequest): Job => {
    if (template === undefined && model.tokenizer.chatTemplate === undefined) {
      throw new HttpError(400, `The model '${modelId}' has no chat template: use /v1/completions, or start the server with a template (--template FILE).`,
        'invalid_request_error', 'model', 'model_not_supported');
    }
    checkMaxTokens(b.max_tokens, 'max_tokens');
    checkMaxTokens(b.max_completion_tokens, 'max_completion_tokens');
    const messages: ChatMessage[] = b.messages.map((m) => ({
      role: m.role === 'developer' ? 'system' : m.role,
      content: typeof m.content === 'string' ? m.content : m.content.map((p) => p.text).join(''),
    }));
    let text: string;
    try {
      text = renderChat(model, messages, template);
    } catch (e) {
      throw new HttpError(400, (e as Error).message.replace(/^chat: /, ''), 'invalid_request_error', 'messages', 'invalid_value');
    }
    const promptTokens = model.tokenizer.encode(text, { bos: false, special: true }).length;
    checkPrompt(promptTokens, 'messages');
    return {
      kind: 'chat', messages, promptTokens,
      maxTokens: b.max_completion_tokens ?? b.max_tokens ?? Math.max(1, maxSeq - promptTokens + 1),
      stop: stopOf(b.stop), sampling: samplingOf(b), stream: b.stream === true, includeUsage: b.stream_options?.include_usage === true,
    };
  };

  const completionJob = (b: CompletionRequest): Job => {
    checkMaxTokens(b.max_tokens, 'max_tokens');
    let ids: number[];
    const p = b.prompt;
    if (typeof p === 'string') ids = model.tokenizer.encode(p);
    else if (p.every((x) => typeof x === 'number')) {
      ids = p as number[];
      const bad = ids.findIndex((t) => t >= model.config.vocab);
      if (bad >= 0) throw new HttpError(400, `prompt[${bad}] is token ${ids[bad]}, outside the vocabulary of ${model.config.vocab}.`, 'invalid_request_error', `prompt[${bad}]`, 'invalid_value');
    } else if (p.length === 1) ids = model.tokenizer.encode(p[0] as string);
    else throw new HttpError(400, 'prompt must be a string, one string in an array, or an array of token ids: batches of prompts are not supported (send one request each).', 'invalid_request_error', 'prompt', 'invalid_value');
    if (ids.length === 0) throw new HttpError(400, 'prompt is empty: it has no tokens.', 'invalid_request_error', 'prompt', 'invalid_value');
    checkPrompt(ids.length, 'prompt');
    return {
      kind: 'completion', ids, promptTokens: ids.length, maxTokens: b.max_tokens ?? 16,
      stop: stopOf(b.stop), sampling: samplingOf(b), stream: b.stream === true, includeUsage: b.stream_options?.include_usage === true,
    };
  };

  // ---- running a job ----

  interface Outcome { text: string; completionTokens: number; finish: 'stop' | 'length' }

  /** Runs the job, calling onText for each piece of text; resolves with what finished it. */
  async function run(job: Job, signal: AbortSignal, onText: (text: string) => Promise<void>): Promise<Outcome> {
    const gen: AsyncGenerator<GeneratedToken> = job.kind === 'chat'
      ? model.chat(job.messages!, { ...job.sampling, maxTokens: job.maxTokens, stop: job.stop, signal, ...(template !== undefined ? { template } : {}) })
      : model.generate(job.ids!, { ...job.sampling, maxTokens: job.maxTokens, stop: job.stop, signal });
    let text = '', n = 0, ended = false;
    const ids: number[] = [];
    for await (const t of gen) {
      if (model.stopIds.includes(t.id)) ended = true;
      else {
        n++;
        ids.push(t.id);
      }
      if (t.text) {
        text += t.text;
        await onText(t.text);
      }
    }
    // 'length' when the token budget or the context ran out, unless a stop string or the end token ended it
    const limited = n >= job.maxTokens || job.promptTokens + n >= maxSeq;
    let finish: Outcome['finish'] = 'stop';
    if (!ended && limited) {
      const full = job.stop ? model.tokenizer.decode(ids) : '';
      finish = job.stop?.some((s) => full.endsWith(s) && !text.endsWith(s)) ? 'stop' : 'length';
    }
    return { text, completionTokens: n, finish };
  }

  async function handle(kind: Kind, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
    if (closing) throw shuttingDown();
    const job = kind === 'chat' ? chatJob(req.body as ChatRequest) : completionJob(req.body as CompletionRequest);
    const res = reply.raw;
    const ac = new AbortController();
    const onClose = () => {
      if (!res.writableFinished) ac.abort(new Gone(false));
    };
    res.on('close', onClose);
    res.on('error', () => undefined);  // a socket reset mid-write: 'close' follows
    let release: (() => void) | undefined;
    inflight.add(ac);
    try {
      try {
        release = await admission.enter(ac.signal);
      } catch (e) {
        if (e instanceof QueueFullError) throw new HttpError(429, e.message, 'rate_limit_exceeded', null, 'queue_full', { 'Retry-After': String(e.retryAfterSeconds) });
        if (e instanceof HttpError) throw e;
        counts.aborted++;  // its client left while it waited
        reply.hijack();
        res.destroy();
        return undefined;
      }
      if (closing) throw shuttingDown();
      const id = completionId(kind === 'chat' ? 'chatcmpl-' : 'cmpl-');
      const createdAt = Math.floor(Date.now() / 1000);
      return job.stream ? await streamJob(job, id, createdAt, reply, ac) : await wholeJob(job, id, createdAt, reply, ac);
    } finally {
      release?.();
      inflight.delete(ac);
      res.off('close', onClose);
    }
  }

  async function wholeJob(job: Job, id: string, createdAt: number, reply: FastifyReply, ac: AbortController): Promise<unknown> {
    let out: Outcome;
    try {
      out = await run(job, ac.signal, async () => undefined);
    } catch (e) {
      const why = ac.signal.reason;
      if (ac.signal.aborted && why instanceof Gone) {
        if (why.shutdown) throw shuttingDown();
        counts.aborted++;
        reply.hijack();
        reply.raw.destroy();
        return undefined;
      }
      throw e;  // -> 500
    }
    counts.completed++;
    const usage = usageOf(job.promptTokens, out.completionTokens);
    if (job.kind === 'chat') {
      return reply.send({
        id, object: 'chat.completion', created: createdAt, model: modelId,
        choices: [{ index: 0, message: { role: 'assistant', content: out.text, refusal: null }, logprobs: null, finish_reason: out.finish }], usage,
      });
    }
    return reply.send({ id, object: 'text_completion', created: createdAt, model: modelId, choices: [{ text: out.text, index: 0, logprobs: null, finish_reason: out.finish }], usage });
  }

  async function streamJob(job: Job, id: string, createdAt: number, reply: FastifyReply, ac: AbortController): Promise<undefined> {
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-cache', Connection: 'keep-alive', 'X-Accel-Buffering': 'no' });
    const send = (data: unknown) => write(res, `data: ${JSON.stringify(data)}\n\n`);
    const usageField = job.includeUsage ? { usage: null } : {};
    const chunk = job.kind === 'chat'
      ? (delta: Record<string, string>, finish: string | null) => ({
        id, object: 'chat.completion.chunk', created: createdAt, model: modelId, choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }], ...usageField,
      })
      : (delta: Record<string, string>, finish: string | null) => ({
        id, object: 'text_completion', created: createdAt, model: modelId, choices: [{ text: delta.content ?? '', index: 0, logprobs: null, finish_reason: finish }], ...usageField,
      });
    try {
      if (job.kind === 'chat') await send(chunk({ role: 'assistant', content: '' }, null));
      const out = await run(job, ac.signal, (text) => send(chunk({ content: text }, null)));
      await send(chunk({}, out.finish));
      if (job.includeUsage) {
        const usage: Usage = usageOf(job.promptTokens, out.completionTokens);
        await send({ id, object: job.kind === 'chat' ? 'chat.completion.chunk' : 'text_completion', created: createdAt, model: modelId, choices: [], usage });
      }
      await write(res, 'data: [DONE]\n\n');
      counts.completed++;
    } catch (e) {
      const why = ac.signal.reason;
      if (ac.signal.aborted && why instanceof Gone && !why.shutdown) counts.aborted++;
      else {
        // the model failed (or the server is closing): an error event ends the stream
        const err = ac.signal.aborted ? shuttingDown() : new HttpError(500, `The server had an error while generating: ${(e as Error).message}`, 'server_error');
        if (!ac.signal.aborted) {
          counts.failed++;
          reply.log.error(e);
        }
        await write(res, `data: ${JSON.stringify(err.body)}\n\n`).catch(() => undefined);
      }
    } finally {
      if (!res.destroyed) res.end();
    }
    return undefined;
  }

  app.post('/v1/chat/completions', { schema: { body: chatSchema } }, (req, reply) => handle('chat', req, reply));
  app.post('/v1/completions', { schema: { body: completionSchema } }, (req, reply) => handle('completion', req, reply));

  await app.listen({ port, host });
  const bound = app.server.address();
  const actualPort = typeof bound === 'object' && bound ? bound.port : port;
  const url = host.includes(':') ? `http://[${host}]:${actualPort}` : `http://${host}:${actualPort}`;

  return {
    app, url, port: actualPort, model, modelId, health,
    close(o: { drainSeconds?: number } = {}): Promise<void> {
      if (closed) return closed;
      closing = true;
      closed = (async () => {
        admission.rejectWaiting(shuttingDown());
        const until = Date.now() + 1000 * (o.drainSeconds ?? 30);
        while (admission.active > 0 && Date.now() < until) await sleep(20);
        for (const ac of inflight) ac.abort(new Gone(true));
        for (let i = 0; admission.active > 0 && i < 500; i++) await sleep(10);
        await app.close();
        if (ownsModel) model.dispose();
      })();
      return closed;
    },
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** How long a client may leave its stream unread before it is dropped (its generation holds a sequence meanwhile). */
const STALL_MS = 60_000;

/**
 * Writes to a response, waiting while the client reads slower than we produce; a
 * no-op once it is gone. A client that reads nothing for STALL_MS is disconnected
 * (its 'close' then aborts the generation and frees its sequence).
 */
function write(res: ServerResponse, s: string): Promise<void> {
  if (res.destroyed || res.writableEnded) return Promise.resolve();
  if (res.write(s)) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    const timer = setTimeout(() => {
      res.destroy();
      done();
    }, STALL_MS);
    res.on('drain', done);
    res.on('close', done);
  });
}
