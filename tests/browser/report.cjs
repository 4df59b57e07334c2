// Opens a flowenrich HTML report in headless Chromium (Debian's, driven by
// playwright-core) and prints, as one JSON object on stdout, what the page drew: every
// node's and edge's geometry and hover text, the same after each filter given, the
// console errors, requests to anything but the page itself, and timings. Optionally
// saves a screenshot.
//
// usage: node report.cjs PAGE.html [--screenshot OUT.png] [--filter region=R] [--filter app=A]
"use strict";
const path = require("path");
const { chromium } = require(process.env.PLAYWRIGHT_CORE || "playwright-core");

async function drawn(page) {
  return page.evaluate(() => {
    const box = (e) => {
      const r = e.getBoundingClientRect();
      return { x: r.x, y: r.y, width: r.width, height: r.height };
    };
    const nodes = [...document.querySelectorAll("#map circle.node")].map((c) => ({
      name: c.dataset.name,
      cx: Number(c.getAttribute("cx")),
      cy: Number(c.getAttribute("cy")),
      r: Number(c.getAttribute("r")),
      box: box(c),
      cls: c.getAttribute("class"),
    }));
    const edges = [...document.querySelectorAll("#map path.edge")].map((p) => ({
      src: p.dataset.src,
      dst: p.dataset.dst,
      width: Number(p.getAttribute("stroke-width")),
      bytes: Number(p.dataset.bytes),
      cls: p.getAttribute("class"),
      box: box(p),
    }));
    const bands = document.querySelectorAll("#sankey path.band").length;
    const regions = [...document.querySelectorAll("#regions td.cell")].map((td) => Number(td.dataset.bytes));
    const lines = [...document.querySelectorAll("#minutes polyline.series")].map((l) => ({
      src: l.dataset.src, dst: l.dataset.dst, bytes: Number(l.dataset.bytes),
    }));
    const series = lines.length;
    const talkers = document.querySelectorAll("#talkers tr").length - 1;
    const rejected = [...document.querySelectorAll("#rejected tr")].slice(1).map((tr) => tr.textContent);
    return { nodes, edges, bands, regions, series, lines, talkers, rejected,
             drawMs: Number(document.body.dataset.drawMs), drawn: Number(document.body.dataset.drawn) };
  });
}

// The tooltip text shown while the mouse is over `selector`'s `index`th element, at a
// point of it that is painted (a path's own stroke, not its bounding box).
async function hoverText(page, selector, index) {
  const point = await page.evaluate(([selector, index]) => {
    const e = document.querySelectorAll(selector)[index];
    if (e instanceof SVGCircleElement) {
      const r = e.getBoundingClientRect();
      return { x: r.x + r.width / 2, y: r.y + r.height / 2 };
    }
    // A point of the path that is painted and on top (a dashed path has gaps; other
    // edges and nodes cross it), mapped to the screen.
    const length = e.getTotalLength();
    const m = e.getScreenCTM();
    let first = null;
    for (let k = 0; k <= 40; k++) {
      const t = 0.5 + (k % 2 ? 1 : -1) * Math.ceil(k / 2) * 0.011;
      const p = e.getPointAtLength(length * t);
      const at = { x: p.x * m.a + p.y * m.c + m.e, y: p.x * m.b + p.y * m.d + m.f };
      if (!first) first = at;
      if (document.elementFromPoint(at.x, at.y) === e) return at;
    }
    return first;
  }, [selector, index]);
  await page.mouse.move(point.x, point.y);
  const text = await page.evaluate(() => {
    const tip = document.getElementById("tip");
    return tip.style.display === "block" ? tip.textContent : null;
  });
  const under = await page.evaluate(([x, y]) => {
    const e = document.elementFromPoint(x, y);
    return e ? (e.dataset.name || (e.dataset.src ? e.dataset.src + " > " + e.dataset.dst : e.tagName)) : null;
  }, [point.x, point.y]);
  await page.mouse.move(1, 1);
  return { text, under };
}

(async () => {
  const args = process.argv.slice(2);
  const file = path.resolve(args[0]);
  let screenshot = null;
  const filters = [];
  for (let i = 1; i < args.length; i++) {
    if (args[i] === "--screenshot") screenshot = args[++i];
    else if (args[i] === "--filter") filters.push(args[++i]);
  }
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 1900 } });
  const errors = [];
  const requests = [];
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("request", (r) => { if (r.url() !== "file://" + file) requests.push(r.url()); });
  const opened = Date.now();
  await page.goto("file://" + file);
  await page.waitForFunction(() => Number(document.body.dataset.drawn) >= 1);
  const firstDrawing = Date.now() - opened;
  const result = { firstDrawingMs: firstDrawing, initial: await drawn(page), errors, requests };
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
  // Hover every edge and node of the initial drawing (up to 60 of each).
  result.edgeHovers = [];
  for (let i = 0; i < Math.min(60, result.initial.edges.length); i++) {
    result.edgeHovers.push(await hoverText(page, "#map path.edge", i));
  }
  result.nodeHovers = [];
  for (let i = 0; i < Math.min(60, result.initial.nodes.length); i++) {
    result.nodeHovers.push(await hoverText(page, "#map circle.node", i));
  }
  result.filtered = [];
  for (const filter of filters) {
    const [name, value] = filter.split("=");
    const before = await page.evaluate(() => Number(document.body.dataset.drawn));
    const started = Date.now();
    await page.selectOption("#" + name, value);
    await page.waitForFunction((n) => Number(document.body.dataset.drawn) > n, before);
    const ms = Date.now() - started;
    result.filtered.push({ filter, ms, ...(await drawn(page)) });
    await page.selectOption("#" + name, "");
  }
  await browser.close();
  process.stdout.write(JSON.stringify(result) + "\n");
})().catch((e) => {
  process.stderr.write(String(e && e.stack || e) + "\n");
  process.exit(1);
});
