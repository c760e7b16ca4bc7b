// Chat: the model's own template (GGUF tokenizer.chat_template, tokenizer_config.json
// chat_template) rendered by Jinja, special tokens parsed; a conversation that keeps
// the KV cache between turns and prefills only what a turn adds.
import { expect } from 'chai';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadModel, renderChat, type ChatMessage, type Model } from '../lib/index';
import { writeRandomModel } from '../lib/model/synth';
import { ROOT } from './helpers';

const MODULES = path.join(__dirname, '..', 'node_modules');
const QWEN = path.join(MODULES, '@lenml', 'tokenizer-qwen2_5', 'models', 'tokenizer.json');
const LLAMA3 = path.join(MODULES, '@lenml', 'tokenizer-llama3', 'models', 'tokenizer.json');

async function ids(gen: AsyncGenerator<{ id: number; text: string }>): Promise<{ ids: number[]; text: string }> {
  const out: number[] = [];
  let text = '';
  for await (const t of gen) {
    out.push(t.id);
    text += t.text;
  }
  return { ids: out, text };
}

describe('chat: templates and conversations', function () {
  this.timeout(300000);
  let dir = '';
  let qwen: Model, llama3: Model, spm: Model;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sparq-chat-'));
    const base = { dim: 64, hidden: 128, layers: 2, heads: 4, kvHeads: 2, maxSeq: 256, tied: true };
    qwen = await loadModel(writeRandomModel(path.join(dir, 'q'), { ...base, vocab: 151665, tokenizerJson: QWEN }, ['gguf-f32'])['gguf-f32']!);
    llama3 = await loadModel(writeRandomModel(path.join(dir, 'l'), { ...base, vocab: 128256, tokenizerJson: LLAMA3 }, ['hf']).hf!);
    spm = await loadModel(writeRandomModel(path.join(dir, 's'), { ...base, vocab: 512 }, ['gguf-f32'])['gguf-f32']!);
  });
  after(() => {
    for (const m of [qwen, llama3, spm]) m?.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('renders the file\'s own template: Llama 3 (tokenizer_config.json) and Qwen 2.5 (GGUF) prompts, as their formats are documented', () => {
    const msgs: ChatMessage[] = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi there' }];
    expect(renderChat(llama3, msgs)).to.equal(
      '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>' +
      '<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n');
    expect(renderChat(qwen, msgs)).to.equal('<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n');
    // without a system message Qwen's template supplies its default one
    expect(renderChat(qwen, [{ role: 'user', content: 'x' }])).to.match(/^<\|im_start\|>system\nYou are Qwen/);
  });

  it('chat() prefills the rendered prompt with its special tokens as single tokens', async () => {
    const msgs: ChatMessage[] = [{ role: 'user', content: 'Hi there' }];
    const want = llama3.tokenizer.encode(renderChat(llama3, msgs), { bos: false, special: true });
    expect(want[0]).to.equal(128000);
    expect(want.filter((id) => id === 128009)).to.have.length(1);  // one <|eot_id|>
    const a = await ids(llama3.chat(msgs, { maxTokens: 4, temperature: 0 }));
    expect(llama3.stats.promptTokens).to.equal(want.length);
    expect(a.ids).to.deep.equal((await ids(llama3.generate(want, { maxTokens: 4, temperature: 0 }))).ids);
  });

  it('a conversation prefills only what a turn adds, and continues exactly as a fresh prefill of the same tokens', async () => {
    const c = qwen.conversation({ maxTokens: 5, temperature: 0 });
    const t1 = await ids(c.send('Hello'));
    const p1 = qwen.tokenizer.encode(renderChat(qwen, [{ role: 'user', content: 'Hello' }]), { bos: false, special: true });
    expect(c.lastPrefill).to.equal(p1.length);
    const t2 = await ids(c.send('And again?'));
    const full2 = renderChat(qwen, [{ role: 'user', content: 'Hello' }, { role: 'assistant', content: t1.text }, { role: 'user', content: 'And again?' }]);
    const delta = qwen.tokenizer.encode(full2.slice(renderChat(qwen, [{ role: 'user', content: 'Hello' }]).length + t1.text.length), { bos: false, special: true });
    // maxTokens ended turn 1: its last token had not been fed, so it leads turn 2's prefill
    expect(c.lastPrefill).to.equal(1 + delta.length);
    expect(qwen.stats.promptTokens).to.equal(1 + delta.length);
    expect(c.lastPrefill).to.be.lessThan(qwen.tokenizer.encode(full2, { bos: false, special: true }).length / 2);
    // the same tokens prefilled from an empty context give the same answer
    const fresh = await ids(qwen.generate([...p1, ...t1.ids, ...delta], { maxTokens: 5, temperature: 0 }));
    expect(t2.ids).to.deep.equal(fresh.ids);
    expect(c.messages.map((m) => m.role)).to.deep.equal(['user', 'assistant', 'user', 'assistant']);
  });

  it('starts the context over when it no longer holds the conversation (another generation, a template that rewrites turns)', async () => {
    const c = qwen.conversation({ maxTokens: 3, temperature: 0 });
    await ids(c.send('one'));
    await ids(qwen.generate('unrelated', { maxTokens: 2 }));
    await ids(c.send('two'));
    const all = qwen.tokenizer.encode(renderChat(qwen, c.messages.slice(0, 3)), { bos: false, special: true });
    expect(c.lastPrefill).to.equal(all.length);
    // Llama 3's template trims answers: the render is then not the context's text plus the
    // new turn, and the context is kept up to the first token where the two differ
    const l = llama3.conversation({ maxTokens: 3, temperature: 0 });
    await ids(l.send('one'));
    const again = await ids(l.send('two'));
    const all3 = llama3.tokenizer.encode(renderChat(llama3, l.messages.slice(0, 3)), { bos: false, special: true });
    expect(l.lastPrefill).to.be.lessThan(all3.length);
    expect(again.ids).to.deep.equal((await ids(llama3.generate(all3, { maxTokens: 3, temperature: 0 }))).ids);
    l.reset();
    expect(l.messages).to.deep.equal([]);
  });

  it('a template that rewrites earlier answers: the context is kept up to where the render differs, and the answer is a fresh prefill\'s', async () => {
    // answers shortened to their first 4 characters when they are history
    const template = "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.role == 'assistant' %}{{ m.content[:4] }}{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}<|im_start|>assistant\n";
    const c = qwen.conversation({ maxTokens: 12, temperature: 0, template });
    await ids(c.send('The first question, asked at some length so that the history is long.'));
    const first = c.lastPrefill;
    const t2 = await ids(c.send('Two?'));
    const all = qwen.tokenizer.encode(renderChat(qwen, c.messages.slice(0, 3), template), { bos: false, special: true });
    expect(c.lastPrefill).to.be.lessThan(all.length - first + 4);  // the first prompt stayed in the context
    expect(c.lastPrefill).to.be.greaterThan(0);
    expect(t2.ids).to.deep.equal((await ids(qwen.generate(all, { maxTokens: 12, temperature: 0 }))).ids);
  });

  it('a model without a template: a clear error, or a caller-supplied template', async () => {
    expect(spm.tokenizer.chatTemplate).to.equal(undefined);
    expect(() => spm.conversation()).to.throw(RangeError, /no chat template.*pass \{ template \}/);
    let err: unknown;
    try { await ids(spm.chat([{ role: 'user', content: 'hi' }])); } catch (e) { err = e; }
    expect(String(err)).to.match(/no chat template/);
    const template = '{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}assistant:';
    expect(renderChat(spm, [{ role: 'user', content: 'hi' }], template)).to.equal('user: hi\nassistant:');
    const r = await ids(spm.chat([{ role: 'user', content: 'hi' }], { template, maxTokens: 3, temperature: 0 }));
    expect(r.ids).to.have.length(3);
    expect(() => renderChat(spm, [{ role: 'user', content: 'hi' }], '{% for %}')).to.throw(RangeError, /does not parse/);
    expect(() => renderChat(spm, [{ role: 'user' } as ChatMessage], template)).to.throw(TypeError, /message 0/);
  });
});

describe('chat: npx sparq chat through a pseudo-terminal', function () {
  this.timeout(180000);
  let dir = '';
  let file = '';
  before(function () {
    const which = spawnSync('script', ['--version'], { encoding: 'utf8' });
    if (which.status !== 0) {
      console.log('      (skipped: util-linux `script`, which provides the pseudo-terminal, is not installed)');
      this.skip();
    }
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sparq-chat-cli-'));
    // long answers (maxSeq 8192) so that Ctrl-C lands while one streams
    file = writeRandomModel(dir, { dim: 128, hidden: 256, layers: 2, heads: 4, kvHeads: 2, maxSeq: 8192, tied: true, vocab: 151665, tokenizerJson: QWEN }, ['gguf-f32'])['gguf-f32']!;
  });
  after(() => { if (dir) fs.rmSync(dir, { recursive: true, force: true }); });

  it('streams an answer, stops it on Ctrl-C, forgets on /reset, answers again and quits on /exit', async () => {
    const cmd = `${JSON.stringify(process.execPath)} --import tsx lib/cli.ts chat --model ${JSON.stringify(file)} -n 6000 --temperature 1 --seed 3`;
    const child = spawn('script', ['-qfec', cmd, '/dev/null'], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString('utf8'); });
    child.stderr.on('data', (d: Buffer) => { out += d.toString('utf8'); });
    const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
    const until = async (re: RegExp, from: number, ms = 60000) => {
      const t0 = Date.now();
      while (!re.test(out.slice(from))) {
        if (Date.now() - t0 > ms) throw new Error(`no ${re} in the terminal output: ${JSON.stringify(out.slice(-400))}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      return out.length;
    };
    const prompts = () => (out.match(/> /g) ?? []).length;
    try {
      await until(/> /, 0);
      let at = out.length;
      child.stdin.write('Hello\r');
      await until(/Hello/, at);
      await new Promise((r) => setTimeout(r, 1500));  // the answer streams (6000 tokens at most)
      at = out.length;
      child.stdin.write('\x03');  // Ctrl-C
      await until(/\(stopped\)/, at);
      const before = prompts();
      await until(/> /, at);
      at = out.length;
      child.stdin.write('/reset\r');
      await until(/\(conversation reset\)/, at);
      at = out.length;
      child.stdin.write('Hi\r');
      await until(/Hi/, at);
      await new Promise((r) => setTimeout(r, 500));
      at = out.length;
      child.stdin.write('\x03');  // stop this one too
      await until(/\(stopped\)/, at);
      await until(/> $|> \S*$/, at);
      expect(prompts()).to.be.greaterThan(before);
      child.stdin.write('/exit\r');
      expect(await exited).to.equal(0);
    } finally {
      child.kill();
    }
  });
});
