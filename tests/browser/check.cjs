// Drives Debian's chromium (headless, over the DevTools protocol with playwright-core) for the
// report tests and benchmark. Usage (NODE_PATH = the node_modules of scripts/report-deps.sh):
//   node check.cjs html REPORT.html SCREENSHOT.png      the HTML report, offline
//   node check.cjs blame REPORT.html SCREENSHOT.png LEAF   a `--mode blame` report: the blame
//                                                       view, the held-by column, a click on LEAF's row
//   node check.cjs scale INDEX.html SCREENSHOT.png      ftprof scale's index.html, offline
//   node check.cjs speedscope PROFILE.json SCREENSHOT.png   schema + speedscope's own app
//   node check.cjs bench REPORT.html RUNS               render time of the HTML report
//   node check.cjs shot PAGE.svg|html SCREENSHOT.png    a screenshot (charts)
//   node check.cjs findings REPORT.html SCREENSHOT.png [N]  the Findings panel and the source view (finding N)
// Prints one JSON object on stdout; exits non-zero on a failed step.
'use strict';
const fs = require('fs');
const path = require('path');
const http = require('http');
const { execSync } = require('child_process');
const { chromium } = require('playwright-core');

function chromiumPath() {
  if (process.env.FTPROF_CHROMIUM) return process.env.FTPROF_CHROMIUM;
  for (const name of ['chromium', 'chromium-browser']) {
    try { return execSync(`command -v ${name}`, { shell: '/bin/sh' }).toString().trim(); } catch (e) { /* next */ }
  }
  throw new Error('chromium not found: run scripts/report-deps.sh');
}

async function launch() {
  return chromium.launch({
    executablePath: chromiumPath(),
    headless: true,
    // Root in containers needs --no-sandbox; the proxy makes any request that escapes the
    // offline context fail instead of reaching a network.
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--proxy-server=http://127.0.0.1:9'],
  });
}

// A page that records every request and page error.
async function page(browser, opts) {
  const context = await browser.newContext({ offline: !!opts.offline, viewport: { width: 1400, height: 1000 } });
  const p = await context.newPage();
  const log = { requests: [], errors: [], console: [] };
  p.on('request', (r) => log.requests.push(r.url()));
  p.on('pageerror', (e) => log.errors.push(String(e)));
  p.on('console', (m) => { if (m.type() === 'error') log.console.push(m.text()); });
  return { p, log, context };
}

const fileUrl = (f) => 'file://' + path.resolve(f);

async function html(file, shot) {
  const browser = await launch();
  const { p, log } = await page(browser, { offline: true });
  const out = { ok: false };
  try {
    const t0 = Date.now();
    await p.goto(fileUrl(file), { waitUntil: 'load' });
    await p.waitForSelector('body[data-rendered="1"]', { timeout: 20000 });
    out.render_ms = Date.now() - t0;
    out.frames_wall = await p.locator('#chart svg g').count();
    await p.check('#mode-wait');
    await p.waitForSelector('body[data-rendered="1"]', { timeout: 10000 });
    out.view = await p.$eval('#chart svg g', (g) => g.getAttribute('name'));
    out.frames_wait = await p.locator('#chart svg g').count();
    out.wait_leaves = await p.$$eval('#chart svg g[name^="["]', (gs) => gs.map((g) => g.getAttribute('name')));
    out.lock_rows = await p.$$eval('#locks tbody tr', (rs) => rs.map((r) => Array.from(r.cells).map((c) => c.textContent)));
    out.time_rows = await p.$$eval('#time tbody tr', (rs) => rs.map((r) => r.cells[0].textContent));
    out.verdict = await p.textContent('#verdict');
    out.lines = await p.$$eval('#lines tbody tr', (rs) => rs.map((r) => r.cells[0].textContent));
    // Sort by waits, then click the biggest lock: its stacks stay coloured, the rest greys out.
    await p.click('#locks th[data-key="total_us"]');
    out.sorted_first = await p.$eval('#locks tbody tr', (r) => r.cells[1].textContent);
    const leaf = await p.$eval('#locks tbody tr', (r) => r.getAttribute('data-leaf'));
    await p.click('#locks tbody tr >> nth=0');
    await p.waitForSelector('#locks tbody tr.selected', { timeout: 5000 });
    await p.waitForSelector('body[data-rendered="1"]', { timeout: 10000 });
    out.clicked_leaf = leaf;
    const highlight = (gs, leaf) => {
      const fill = (g) => g.querySelector('rect').getAttribute('fill');
      const lockG = gs.filter((g) => g.getAttribute('name') === leaf);
      return { lock_frames: lockG.length, lock_fill: lockG.map(fill), greyed: gs.filter((g) => fill(g) === '#e6e6e6').length, total: gs.length };
    };
    out.highlight = await p.$$eval('#chart svg g', highlight, leaf);
    // The same mark in the thread-time view, where the lock's stacks sit beside running ones (the
    // waiting view may hold nothing but the lock's stacks: then nothing there is greyed).
    await p.check('#mode-wall');
    await p.waitForSelector('body[data-rendered="1"]', { timeout: 10000 });
    out.highlight_wall = await p.$$eval('#chart svg g', highlight, leaf);
    await p.check('#mode-wait');
    await p.waitForSelector('body[data-rendered="1"]', { timeout: 10000 });
    // Per-thread filter: the waiter thread alone.
    out.threads = await p.$$eval('#thread option', (os) => os.map((o) => o.textContent));
    await p.screenshot({ path: shot, fullPage: false });
    const waiter = await p.$$eval('#thread option', (os) => (os.find((o) => o.textContent.startsWith('waiter')) || {}).value);
    if (waiter) {
      await p.selectOption('#thread', waiter);
      await p.waitForSelector('body[data-rendered="1"]', { timeout: 10000 });
      out.thread_filtered = await p.$$eval('#chart svg g', (gs) => gs.map((g) => g.getAttribute('name')).filter((n) => / \(\d+\)$/.test(n)));
    }
    // Search marks matching frames.
    await p.fill('#search', 'lock_handoff');
    out.search_hits = await p.$$eval('#chart svg g rect', (rs) => rs.filter((r) => r.getAttribute('fill') === '#e600e6').length);
    out.ok = true;
  } catch (e) {
    out.failure = String(e);
  }
  out.requests = log.requests.filter((u) => u !== fileUrl(file));
  out.errors = log.errors.concat(log.console);
  await browser.close();
  return out;
}

// The flamegraph's frames as drawn: name, fill, and the names of the frames above it (d3's data).
async function drawnFrames(p) {
  return p.$$eval('#chart svg g', (gs) => gs.map((g) => {
    const d = d3.select(g).datum();
    const path = [];
    for (let n = d && d.parent; n; n = n.parent) path.push(n.data.name);
    return { name: g.getAttribute('name'), fill: g.querySelector('rect').getAttribute('fill'), path: path };
  }));
}

async function blame(file, shot, leaf) {
  const browser = await launch();
  const { p, log } = await page(browser, { offline: true });
  const out = { ok: false };
  try {
    await p.goto(fileUrl(file), { waitUntil: 'load' });
    await p.waitForSelector('body[data-rendered="1"]', { timeout: 20000 });
    out.checked = await p.$eval('input[name=mode]:checked', (r) => r.value);
    out.view = await p.$eval('#chart svg g', (g) => g.getAttribute('name'));
    out.frames = await drawnFrames(p);
    out.held_by = await p.$$eval('#locks tbody tr', (rs) => rs.map((r) => [r.getAttribute('data-leaf'), r.querySelector('td.held-by').textContent]));
    out.held_by_header = await p.$eval('#locks thead th:nth-child(8)', (th) => th.textContent);
    // Click the lock: its blame stacks stay coloured, the others grey out.
    await p.click(`#locks tbody tr[data-leaf="${leaf.replace(/"/g, '\\"')}"]`);
    await p.waitForSelector('#locks tbody tr.selected', { timeout: 5000 });
    await p.waitForSelector('body[data-rendered="1"]', { timeout: 10000 });
    out.checked_after_click = await p.$eval('input[name=mode]:checked', (r) => r.value);
    out.highlighted = await drawnFrames(p);
    await p.screenshot({ path: shot, fullPage: false });
    out.ok = true;
  } catch (e) {
    out.failure = String(e);
  }
  out.requests = log.requests.filter((u) => u !== fileUrl(file));
  out.errors = log.errors.concat(log.console);
  await browser.close();
  return out;
}

async function scale(file, shot) {
  const browser = await launch();
  const { p, log } = await page(browser, { offline: true });
  const out = { ok: false };
  try {
    await p.goto(fileUrl(file), { waitUntil: 'load' });
    await p.waitForSelector('body[data-rendered="1"]', { timeout: 20000 });
    out.svgs = await p.locator('.chart-box svg').count();
    out.points = await p.$$eval('#points tbody tr', (rs) => rs.map((r) => r.cells[0].textContent));
    out.links = await p.$$eval('#points a', (as) => as.map((a) => a.getAttribute('href')));
    out.diff_frames = await p.locator('#diff svg g').count();
    out.fits = await p.$$eval('#fits li', (ls) => ls.map((l) => l.textContent));
    // The charts as drawn: x tick labels (the lowest row of numbers), where the legend sits.
    out.charts = await p.$$eval('.chart-box > svg', (svgs) => svgs.map((svg) => {
      const o = svg.getBoundingClientRect();
      const texts = Array.from(svg.querySelectorAll('text')).filter((t) => t.textContent.trim()).map((t) => { const b = t.getBoundingClientRect(); return { s: t.textContent.trim(), x: b.left - o.left, y: b.top - o.top, r: b.right - o.left, b: b.bottom - o.top }; });
      const nums = texts.filter((t) => /^-?\d+(\.\d+)?$/.test(t.s));
      const bottom = Math.max(...nums.map((t) => t.y));
      const xLabels = nums.filter((t) => Math.abs(t.y - bottom) < 2).sort((a, b) => a.x - b.x);
      const axisRight = Math.max(...xLabels.map((t) => t.r));
      const titleEl = svg.querySelector('title');
      return {
        x_labels: xLabels.map((t) => t.s),
        axis_right: axisRight,
        texts: texts.map((t) => [t.s, Math.round(t.x), Math.round(t.r)]),
        tooltip: titleEl ? titleEl.textContent : null,
        width: svg.width.baseVal.value,
        overflow: texts.filter((t) => t.r > svg.width.baseVal.value + 1 || t.x < -1).map((t) => t.s),
      };
    }));
    await p.screenshot({ path: shot, fullPage: true });
    out.ok = true;
  } catch (e) {
    out.failure = String(e);
  }
  out.requests = log.requests.filter((u) => u !== fileUrl(file));
  out.errors = log.errors.concat(log.console);
  await browser.close();
  return out;
}

function serve(root, extra) {
  return new Promise((resolve) => {
    const types = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.json': 'application/json', '.wasm': 'application/wasm', '.png': 'image/png', '.woff2': 'font/woff2', '.ico': 'image/x-icon', '.txt': 'text/plain' };
    const server = http.createServer((req, res) => {
      const u = decodeURIComponent(req.url.split('?')[0].split('#')[0]);
      const f = u === '/profile.json' ? extra : path.join(root, path.normalize(u).replace(/^(\.\.[\/\\])+/, ''));
      fs.readFile(f, (err, data) => {
        if (err) { res.writeHead(404); res.end(); return; }
        res.writeHead(200, { 'content-type': types[path.extname(f)] || 'application/octet-stream', 'access-control-allow-origin': '*' });
        res.end(data);
      });
    });
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

async function speedscope(file, shot) {
  const out = { ok: false };
  const release = path.join(path.dirname(require.resolve('speedscope/package.json')), 'dist', 'release');
  // 1. speedscope's own schema.
  const Ajv = require('ajv');
  const schema = JSON.parse(fs.readFileSync(path.join(release, 'file-format-schema.json'), 'utf8'));
  const ajv = new Ajv({ strict: false, allErrors: true });
  const valid = ajv.validate(schema, JSON.parse(fs.readFileSync(file, 'utf8')));
  out.schema_valid = valid;
  out.schema_errors = valid ? [] : ajv.errors.slice(0, 5).map((e) => e.instancePath + ' ' + e.message);
  // 2. speedscope's own app, served on 127.0.0.1.
  const server = await serve(release, path.resolve(file));
  const base = `http://127.0.0.1:${server.address().port}`;
  const browser = await launch();
  const { p, log } = await page(browser, { offline: false });
  try {
    await p.goto(`${base}/index.html#profileURL=${encodeURIComponent(base + '/profile.json')}`, { waitUntil: 'load' });
    // Loaded: the flame chart canvas is there and the toolbar names the active profile.
    const first = JSON.parse(fs.readFileSync(file, 'utf8')).profiles[0].name;
    await p.waitForFunction((first) => document.querySelectorAll('canvas').length > 0 && document.body.innerText.includes(first), first, { timeout: 30000 });
    await p.waitForTimeout(500);
    out.text = await p.evaluate(() => document.body.innerText);
    out.title = await p.title();
    // The profile selector lists every thread: open it.
    const names = JSON.parse(fs.readFileSync(file, 'utf8')).profiles.map((x) => x.name);
    try {
      await p.getByText(names[0], { exact: false }).first().click({ timeout: 3000 });
      await p.waitForTimeout(300);
    } catch (e) { /* the selector may not open with one profile */ }
    out.text_after = await p.evaluate(() => document.body.innerText);
    await p.screenshot({ path: shot });
    out.ok = true;
  } catch (e) {
    out.failure = String(e);
    out.text = await p.evaluate(() => document.body.innerText).catch(() => '');
  }
  out.requests = log.requests.filter((u) => !u.startsWith(base));
  out.errors = log.errors.concat(log.console);
  await browser.close();
  server.close();
  return out;
}

async function bench(file, runs) {
  const browser = await launch();
  const out = { render_ms: [], script_ms: [] };
  for (let i = 0; i < runs; i++) {
    const { p, context } = await page(browser, { offline: true });
    const t0 = Date.now();
    await p.goto(fileUrl(file), { waitUntil: 'load' });
    await p.waitForSelector('body[data-rendered="1"]', { timeout: 60000 });
    out.render_ms.push(Date.now() - t0);
    out.script_ms.push(await p.evaluate(() => window.ftprofRenderMs));
    await context.close();
  }
  await browser.close();
  out.ok = true;
  return out;
}

// The Findings panel and the source view: a click on the first finding shows its line (with its
// mark) in the source view and greys out the other stacks; a click on a hot source line searches
// its frames in the flamegraph; a click on a Python frame of the flamegraph shows its line.
async function findings(file, shot, index) {
  const n = parseInt(index || '0', 10);
  const browser = await launch();
  const { p, log } = await page(browser, { offline: true });
  const out = { ok: false };
  try {
    await p.goto(fileUrl(file), { waitUntil: 'load' });
    await p.waitForSelector('body[data-rendered="1"]', { timeout: 20000 });
    out.findings = await p.$$eval('#findings li', (ls) => ls.map((l) => [l.getAttribute('data-id'), l.textContent]));
    out.sources = await p.$$eval('#source-file option', (os) => os.map((o) => o.textContent));
    const first = await p.evaluate((n) => JSON.parse(document.getElementById('ftprof-data').textContent).findings[n], n);
    out.first = first;
    await p.click(`#findings li >> nth=${n}`);
    await p.waitForSelector('#findings li.selected', { timeout: 5000 });
    await p.waitForSelector('body[data-rendered="1"]', { timeout: 10000 });
    out.target = await p.$eval('#source tr.target', (r) => ({ line: r.getAttribute('data-line'), marks: Array.from(r.querySelectorAll('.fmark')).map((m) => m.textContent), code: r.querySelector('td.code').firstChild.textContent }));
    out.highlight = await p.$$eval('#chart svg g', (gs, leaf) => {
      const fill = (g) => g.querySelector('rect').getAttribute('fill');
      const mine = gs.filter((g) => g.getAttribute('name') === leaf);
      return { leaf_frames: mine.length, leaf_fill: mine.map(fill), greyed: gs.filter((g) => fill(g) === '#e6e6e6').length, total: gs.length };
    }, first.leaf);
    await p.locator('#findings-section').scrollIntoViewIfNeeded();
    await p.screenshot({ path: shot, fullPage: true });
    // The mark on the source line leads back to its finding.
    await p.click('#source tr.target .fmark');
    out.mark_selects = await p.$eval('#findings li.selected', (l) => l.getAttribute('data-id'));
    // A hot source line → its frames in the flamegraph.
    // (the finding's own line: it has time)
    const hot = await p.$eval('#source tr.target.hot', (r) => r.getAttribute('data-line'));
    await p.click('#source tr.target.hot');
    out.source_click = { line: hot, search: await p.getAttribute('body', 'data-source-search'), box: await p.inputValue('#search') };
    out.search_hits = await p.$$eval('#chart svg g rect', (rs) => rs.filter((r) => r.getAttribute('fill') === '#e600e6').length);
    // A Python frame of the flamegraph (of a file the source view shows) → its line there.
    const names = await p.$$eval('#source-file option', (os) => os.map((o) => o.textContent.split(' — ')[0]));
    // The widest such frame: a click lands on a narrow one's neighbour as often as on it.
    const frame = await p.$$eval('#chart svg g', (gs, [cur, names]) => {
      const width = (g) => parseFloat(g.querySelector('rect').getAttribute('width')) || 0;
      const ok = gs.filter((g) => {
        const m = /\(([^():]+):(\d+)\)$/.exec(g.getAttribute('name') || '');
        return m && m[2] !== cur && names.filter((n) => n === m[1]).length === 1 && width(g) >= 4;
      });
      ok.sort((a, b) => width(b) - width(a));
      return ok.length ? ok[0].getAttribute('name') : null;
    }, [out.target.line, names]);
    out.clicked_frame = frame;
    if (frame) {
      const want = frame.replace(/^.*:(\d+)\)$/, '$1');
      await p.click(`#chart svg g[name="${frame.replace(/"/g, '\\"')}"] rect`, { force: true });
      await p.waitForSelector('body[data-rendered="1"]', { timeout: 10000 });
      // The source view follows the click (give it up to 5 s on a loaded machine).
      await p.waitForFunction((w) => {
        const r = document.querySelector('#source tr.target');
        return r && r.getAttribute('data-line') === w;
      }, want, { timeout: 5000 }).catch(() => {});
      out.frame_target = await p.$eval('#source tr.target', (r) => r.getAttribute('data-line'));
      out.frame_file = await p.$eval('#source-file', (s) => s.options[s.selectedIndex].textContent);
    }
    out.ok = true;
  } catch (e) {
    out.failure = String(e);
  }
  out.requests = log.requests.filter((u) => u !== fileUrl(file));
  out.errors = log.errors.concat(log.console);
  await browser.close();
  return out;
}

async function shot(file, png) {
  const browser = await launch();
  const { p, log } = await page(browser, { offline: true });
  await p.goto(fileUrl(file), { waitUntil: 'load' });
  const box = await p.evaluate(() => { const s = document.querySelector('svg'); return s ? { w: s.width.baseVal.value, h: s.height.baseVal.value } : null; });
  if (box) await p.setViewportSize({ width: Math.ceil(box.w), height: Math.ceil(box.h) });
  await p.screenshot({ path: png });
  await browser.close();
  return { ok: true, box, requests: log.requests.filter((u) => u !== fileUrl(file)), errors: log.errors };
}

(async () => {
  const [cmd, a, b, c] = process.argv.slice(2);
  let out;
  if (cmd === 'html') out = await html(a, b);
  else if (cmd === 'blame') out = await blame(a, b, c);
  else if (cmd === 'scale') out = await scale(a, b);
  else if (cmd === 'speedscope') out = await speedscope(a, b);
  else if (cmd === 'bench') out = await bench(a, parseInt(b || '5', 10));
  else if (cmd === 'shot') out = await shot(a, b);
  else if (cmd === 'findings') out = await findings(a, b, c);
  else throw new Error('usage: check.cjs html|blame|scale|speedscope|bench|shot|findings FILE ARG [LEAF]');
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(out.ok ? 0 : 1);
})().catch((e) => { process.stdout.write(JSON.stringify({ ok: false, failure: String(e && e.stack || e) }) + '\n'); process.exit(1); });
