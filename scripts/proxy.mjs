#!/usr/bin/env node
// proxy.mjs - a round-robin HTTP load balancer for `sparq serve` replicas, on
// node:http alone (an example of what any HTTP load balancer does; nginx,
// HAProxy or a Kubernetes Service do the same in production):
//   node scripts/proxy.mjs --port 8080 --upstream http://127.0.0.1:8081,http://127.0.0.1:8082 [--host 127.0.0.1]
// Each request goes to the next replica in turn. A replica that refuses the
// connection, or answers 503 (shutting down) or 429 (its queue is full) before
// anything was streamed, is skipped and the request tried on the next, once
// each; when none takes it the client gets that last answer (or a 502).
// Responses stream through as they come (server-sent events included); a
// client that goes away closes the upstream request, which aborts the
// generation on the replica.
import http from 'node:http';

function arg(name, def) {
  const i = process.argv.indexOf(name);
  if (i < 0) return def;
  const v = process.argv[i + 1];
  if (v === undefined || v.startsWith('--')) throw new Error(`${name} needs a value`);
  return v;
}

const port = Number(arg('--port', '8080'));
const host = arg('--host', '127.0.0.1');
const upstreams = arg('--upstream', '').split(',').filter(Boolean).map((u) => new URL(u));
if (!upstreams.length || !Number.isInteger(port)) {
  console.error('usage: node scripts/proxy.mjs --port 8080 --upstream http://127.0.0.1:8081,http://127.0.0.1:8082 [--host 127.0.0.1]');
  process.exit(2);
}
const MAX_BODY = 16 * 2 ** 20;
// hop-by-hop headers are the proxy's own on each side
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer']);
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
let turn = 0;

function headersOf(h) {
  const out = {};
  for (const [k, v] of Object.entries(h)) if (!HOP.has(k) && v !== undefined) out[k] = v;
  return out;
}

function fail(res, status, message) {
  if (res.headersSent) return res.destroy();
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ error: { message, type: 'server_error', param: null, code: 'upstream_unavailable' } }));
}

const server = http.createServer((req, res) => {
  const chunks = [];
  let size = 0;
  req.on('data', (c) => {
    size += c.length;
    if (size > MAX_BODY) {
      fail(res, 413, 'request body too large');
      req.destroy();
    } else chunks.push(c);
  });
  req.on('end', () => forward(Buffer.concat(chunks), 0));
  req.on('error', () => res.destroy());

  function forward(body, tries) {
    const u = upstreams[turn++ % upstreams.length];
    const headers = { ...headersOf(req.headers), host: u.host };
    if (body.length || !['GET', 'HEAD'].includes(req.method)) headers['content-length'] = String(body.length);
    const up = http.request({ protocol: u.protocol, hostname: u.hostname, port: u.port, method: req.method, path: req.url, headers, agent }, (ur) => {
      // a replica that is closing or full: the next one may take it
      if ((ur.statusCode === 503 || ur.statusCode === 429) && tries + 1 < upstreams.length) {
        ur.resume();
        return forward(body, tries + 1);
      }
      res.writeHead(ur.statusCode ?? 502, headersOf(ur.headers));
      ur.pipe(res);
      ur.on('error', () => res.destroy());
    });
    up.on('error', (e) => {
      if (res.headersSent || res.destroyed) return res.destroy();
      if (tries + 1 < upstreams.length) return forward(body, tries + 1);
      fail(res, 502, `no replica answered: ${e.message}`);
    });
    // the client went away before the answer finished: so does the upstream request
    res.on('close', () => {
      if (!res.writableFinished) up.destroy();
    });
    up.end(body);
  }
});

server.listen(port, host, () => {
  const a = server.address();
  console.log(`proxy on http://${host}:${a.port} -> ${upstreams.map((u) => u.origin).join(', ')}`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
