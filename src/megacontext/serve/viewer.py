"""The focus viewer page: polls `/v1/conversations/{id}` and draws the working context as a strip.

When the server has an API key, open the page as `/viewer/ID?key=KEY`: the page sends the key as
`Authorization: Bearer KEY` in its polls (and sends no referrer, so the URL's key goes nowhere else).
"""

VIEWER = """<!doctype html>
<html><head><meta charset="utf-8">
<meta name="referrer" content="no-referrer">
<title>MegaContext focus — __CID__</title>
<style>
 body { font: 14px system-ui, sans-serif; margin: 24px; color: #222; }
 #strip { display: flex; height: 36px; border: 1px solid #999; margin: 12px 0; }
 #strip div { height: 100%; }
 .legend span { display: inline-block; width: 14px; height: 14px; vertical-align: middle; margin: 0 4px 0 12px; }
 pre { background: #f5f5f5; padding: 8px; max-height: 240px; overflow: auto; }
</style></head>
<body>
<h2>Conversation <code>__CID__</code></h2>
<div id="stats">loading…</div>
<div id="strip" data-testid="strip"></div>
<div class="legend" id="legend"></div>
<h3>Latest FocusPlans</h3><pre id="plans"></pre>
<script>
const COLORS = ["#d62728", "#ff7f0e", "#2ca02c", "#1f77b4", "#9467bd", "#8c564b", "#7f7f7f"];
const color = lv => COLORS[Math.min(lv, COLORS.length - 1)];
document.getElementById("legend").innerHTML = ["raw", "L1 gist", "L2 gist", "L3 gist", "L4 gist"]
  .map((t, i) => `<span style="background:${color(i)}"></span>${t}`).join("");
const KEY = new URLSearchParams(location.search).get("key");
const AUTH = KEY ? {headers: {Authorization: "Bearer " + KEY}} : {};
async function refresh() {
  const r = await fetch("/v1/conversations/__CID__", AUTH);
  if (!r.ok) {
    document.getElementById("stats").textContent =
      r.status === 401 ? "missing or wrong key: open this page as ?key=KEY" : "unknown conversation";
    return;
  }
  const info = await r.json();
  const f = info.focus;
  document.getElementById("stats").textContent =
    `${info.tokens.toLocaleString()} tokens, gist levels: ${info.levels.length - 1}, ` +
    `${info.disk_bytes.toLocaleString()} bytes on disk` +
    (f ? `; working context ${f.rows} of ${f.budget} rows` : "; no working context yet") +
    (info.generating ? " — generating…" : "");
  const strip = document.getElementById("strip");
  strip.innerHTML = "";
  if (f) for (const run of f.runs) {
    const d = document.createElement("div");
    d.style.flex = String(run.end - run.start);
    d.style.background = color(run.level);
    d.title = `L${run.level}: tokens ${run.start}–${run.end}`;
    d.className = "run level-" + run.level;
    strip.appendChild(d);
  }
  document.getElementById("plans").textContent = info.plans.slice().reverse().map(p =>
    `step ${p.step} (${p.trigger}): ${p.moves.map(m => m[0] + " L" + m[1] + "#" + m[2]).join(", ")}`).join("\\n") || "none yet";
}
refresh(); setInterval(refresh, 1000);
</script></body></html>
"""
