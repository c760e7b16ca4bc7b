// chat.ts - chat on top of generate(): messages rendered with the model's own
// chat template (Jinja, as GGUF's tokenizer.chat_template and
// tokenizer_config.json's chat_template define it; @huggingface/jinja renders
// it), special tokens parsed, generation ending at the end-of-turn token. A
// Conversation keeps the model's KV cache between turns and prefills only what
// a turn adds.
import { Template } from '@huggingface/jinja';
import type { GenerateOptions, GeneratedToken, Model } from './model';

export interface ChatMessage {
  /** 'system', 'user', 'assistant' (or whatever roles the template knows) */
  role: string;
  content: string;
}

export interface ChatOptions extends Omit<GenerateOptions, 'continue'> {
  /** a Jinja chat template to use instead of the model's own (required when the model has none) */
  template?: string;
}

function checkMessages(op: string, messages: unknown): asserts messages is ChatMessage[] {
  if (!Array.isArray(messages) || messages.length === 0) throw new TypeError(`${op}: messages must be a non-empty array of { role, content }`);
  messages.forEach((m, i) => {
    if (typeof m !== 'object' || m === null || typeof (m as ChatMessage).role !== 'string' || typeof (m as ChatMessage).content !== 'string') {
      throw new TypeError(`${op}: message ${i} must be { role: string, content: string }`);
    }
  });
}

const compiled = new Map<string, Template>();

/**
 * The prompt text of `messages` under the model's chat template (or `template`), with
 * the generation prompt added: what chat() tokenizes (special tokens parsed, no BOS
 * added: templates write it themselves).
 */
export function renderChat(model: Model, messages: readonly ChatMessage[], template?: string): string {
  const op = 'chat';
  checkMessages(op, messages);
  const src = template ?? model.tokenizer.chatTemplate;
  if (src === undefined) throw new RangeError(`${op}: the model has no chat template (its file carries none): pass { template } with a Jinja chat template`);
  if (typeof src !== 'string' || src.length === 0) throw new TypeError(`${op}: template must be a non-empty string`);
  let t = compiled.get(src);
  if (!t) {
    try {
      t = new Template(src);
    } catch (e) {
      throw new RangeError(`${op}: the chat template does not parse: ${(e as Error).message}`);
    }
    if (compiled.size > 16) compiled.clear();
    compiled.set(src, t);
  }
  const tok = model.tokenizer, text = (id: number) => new TextDecoder().decode(tok.pieceBytes(id));
  try {
    return t.render({ messages: messages.map((m) => ({ ...m })), add_generation_prompt: true, bos_token: text(tok.bos), eos_token: text(tok.eos) });
  } catch (e) {
    throw new RangeError(`${op}: the chat template failed: ${(e as Error).message}`);
  }
}

// the ids of rendered chat text: special tokens are tokens, no BOS added
const encode = (model: Model, text: string) => model.tokenizer.encode(text, { bos: false, special: true });

/** One answer to `messages` from an empty context (see Model.chat). */
export async function* chat(model: Model, messages: readonly ChatMessage[], opts: ChatOptions = {}): AsyncGenerator<GeneratedToken> {
  const { template, ...gen } = opts;
  yield* model.generate(encode(model, renderChat(model, messages, template)), gen);
}

/**
 * A conversation: messages so far, and the model's context holding them. Each send()
 * renders the whole conversation; when the text already in the context is a prefix of
 * it, only the rest is prefilled (the context continues). When the template rewrote an
 * earlier turn (Llama 3's trims answers), the render is tokenized whole and the context
 * kept up to the first token where the two differ (llama.cpp's server does the same);
 * when another generation used the model in between, the context starts over. The
 * model's context belongs to the conversation between its turns.
 */
export class Conversation {
  readonly messages: ChatMessage[] = [];
  /** tokens the last send() prefilled (the whole prompt, or only what the turn added) */
  lastPrefill = 0;
  private fedText: string | null = null;
  private fedTokens = -1;
  private pending = -1;
  /** the token ids in the model's context, as this conversation fed them */
  private fed: number[] = [];

  constructor(private readonly model: Model, private readonly opts: ChatOptions = {}) {
    if (typeof opts !== 'object' || opts === null) throw new TypeError('conversation: options must be an object');
    if (opts.template === undefined && model.tokenizer.chatTemplate === undefined) {
      throw new RangeError('conversation: the model has no chat template (its file carries none): pass { template } with a Jinja chat template');
    }
  }

  /** Adds a user message (or any message) and streams the answer, which joins the conversation. */
  async *send(message: string | ChatMessage, opts: ChatOptions = {}): AsyncGenerator<GeneratedToken> {
    const m = typeof message === 'string' ? { role: 'user', content: message } : message;
    checkMessages('conversation', [m]);
    const { template, ...gen } = { ...this.opts, ...opts };
    const model = this.model;
    const full = renderChat(model, [...this.messages, m], template);
    let ids: number[] = [], cont = false, base = 0, before: number[] = [], prepared = false;
    // decided once the model's context (slot 0) is held: other generations may have used it
    const prepare = (): { ids: number[]; continue: boolean; keep?: number } => {
      const ours = this.fedTokens === model.length && this.fed.length === model.length;  // nobody else used the context
      cont = ours && this.fedText !== null && full.startsWith(this.fedText);
      let keep: number | undefined;
      if (cont) {
        ids = encode(model, full.slice(this.fedText!.length));
        // the last answer's final token, when generation ended at maxTokens, was never fed
        if (this.pending >= 0) ids.unshift(this.pending);
      } else {
        // the whole render, kept in the context up to its first token that differs (at least one left to prefill)
        ids = encode(model, full);
        let same = 0;
        if (ours) while (same < this.fed.length && same < ids.length - 1 && this.fed[same] === ids[same]) same++;
        if (same > 0) {
          keep = same;
          ids = ids.slice(same);
          cont = true;
        }
      }
      base = cont ? keep ?? model.length : 0;
      before = this.fed.slice(0, base);
      prepared = true;
      this.messages.push({ ...m });
      this.fedText = null;  // until this turn's answer is in the context
      this.lastPrefill = ids.length;
      return { ids, continue: cont, keep };
    };
    const got: number[] = [];
    let reply = '', done = false;
    try {
      for await (const t of model._generate([], gen, true, prepare)) {
        if (!model.stopIds.includes(t.id)) got.push(t.id);
        reply += t.text;
        yield t;
      }
      done = true;
    } finally {
      if (!prepared) this.messages.push({ ...m });  // stopped before it had the context
      this.messages.push({ role: 'assistant', content: reply });
      // continue next turn only from a context that is exactly this text: not after a
      // stop string (its tokens are in the context, not in the reply) or a loop left early
      const exact = done && !(gen.stop?.length) && model.tokenizer.decode(got) === reply;
      const fed = base + ids.length + got.length;
      this.pending = exact && got.length > 0 && model.length === fed - 1 ? got[got.length - 1]! : -1;
      this.fedText = exact && (model.length === fed || this.pending >= 0) ? full + reply : null;
      this.fedTokens = model.length;
      // what the context holds: the tokens fed in order (a stop token, or the last one at maxTokens, is not)
      this.fed = [...before, ...ids, ...got].slice(0, model.length);
    }
  }

  /** Forgets the messages (the next send() starts the context over). */
  reset(): void {
    this.messages.length = 0;
    this.fedText = null;
    this.fedTokens = -1;
    this.pending = -1;
    this.fed = [];
  }
}
