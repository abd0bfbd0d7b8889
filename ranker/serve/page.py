"""``GET /``: a small search page over the index, for people; it calls ``/search`` and shows both rankings."""

from __future__ import annotations

SEARCH_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>ranker: BM25 >> TwinBERT</title>
<style>
  body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; padding: 0 1rem; color: #222; }
  form { display: flex; gap: .5rem; margin-bottom: 1rem; }
  input[type=search] { flex: 1; font-size: 1.1rem; padding: .45rem .6rem; }
  button { font-size: 1rem; padding: .45rem 1rem; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; vertical-align: top; padding: .35rem .5rem; border-bottom: 1px solid #ddd; }
  td.n { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
  .up { color: #0a7d2c; } .down { color: #b3261e; }
  #stages { color: #555; margin: .5rem 0 1rem; }
  #error { color: #b3261e; }
</style>
</head>
<body>
<h1>ranker</h1>
<p>BM25 over the index retrieves the top 100, the TwinBERT student reranks them from cached passage vectors.</p>
<form id="search">
  <input type="search" id="q" name="q" placeholder="Ask something" autofocus>
  <button type="submit">Search</button>
</form>
<div id="stages"></div>
<div id="error"></div>
<table id="results" hidden>
  <thead><tr><th>TwinBERT</th><th>BM25</th><th>docno</th><th>passage</th><th>score</th><th>BM25 score</th></tr></thead>
  <tbody></tbody>
</table>
<script>
const form = document.getElementById("search");
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const q = document.getElementById("q").value;
  const error = document.getElementById("error"), table = document.getElementById("results");
  error.textContent = "";
  const response = await fetch("/search?" + new URLSearchParams({q, k: 10, depth: 100}));
  const body = await response.json();
  if (!response.ok) { error.textContent = body.error.field + ": " + body.error.reason; table.hidden = true; return; }
  const rows = body.hits.map(h => {
    const moved = h.bm25_rank - h.rank;
    const cls = moved > 0 ? "up" : moved < 0 ? "down" : "";
    const tr = document.createElement("tr");
    tr.className = "hit";
    const bm25 = h.bm25_rank + (moved ? " (" + (moved > 0 ? "+" : "") + moved + ")" : "");
    for (const [text, klass] of [[h.rank, "n"], [bm25, "n " + cls], [h.docno, ""], [h.text, ""],
                                 [h.score.toFixed(3), "n"], [h.bm25_score.toFixed(2), "n"]]) {
      const td = document.createElement("td");
      td.textContent = text;
      td.className = klass;
      tr.appendChild(td);
    }
    return tr;
  });
  table.querySelector("tbody").replaceChildren(...rows);
  table.hidden = false;
  document.getElementById("stages").textContent =
    `${body.hits.length} of ${body.meta.depth} BM25 candidates · BM25 ${body.ms.bm25} ms · ` +
    `TwinBERT ${body.ms.rerank} ms (passage vectors ${body.ms.passages} ms) · total ${body.ms.total} ms`;
});
</script>
</body>
</html>
"""
