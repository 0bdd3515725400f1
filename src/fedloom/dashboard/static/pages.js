// fedloom dashboard: the pages. Each loader fetches its documents and returns {key, render}; the app
// re-renders only when the documents changed, so polling a quiet run does not redraw anything.
"use strict";

(() => {
  const { apiGet, apiDownload } = window.FedApi;
  const { lineChart, barChart, heatMap, fmtValue } = window.FedCharts;
  const MAX_LINES = 8;

  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
    return node;
  }

  function card(title, ...body) { return h("section", { class: "card" }, h("h2", {}, title), ...body); }
  function when(iso) { return iso ? new Date(iso).toLocaleString() : "–"; }
  function table(headers, rows, numeric = []) {
    return h("table", {},
      h("thead", {}, h("tr", {}, headers.map((t, i) => h("th", { class: numeric.includes(i) ? "num" : "" }, t)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c, i) => h("td", { class: numeric.includes(i) ? "num" : "" }, c))))));
  }
  function statusBadge(s) { return h("span", { class: `status ${s}` }, s); }
  function later(fn) { requestAnimationFrame(fn); }

  // ----------------------------------------------------------------- runs list
  async function runsPage() {
    const doc = await apiGet("/runs?limit=100");
    return {
      key: JSON.stringify(doc),
      render(main) {
        const rows = doc.runs.map((r) => [
          h("a", { href: `#/run/${r.id}` }, r.name), h("code", {}, r.short_id), r.kind, statusBadge(r.status),
          `${r.rounds_done} / ${r.rounds_planned ?? "?"}`, fmtValue(r.best_accuracy), when(r.created_at), when(r.finished_at),
        ]);
        main.append(h("h1", {}, "Runs"),
          card(`${doc.runs.length} most recent runs`, doc.runs.length ? table(
            ["name", "id", "kind", "status", "rounds", "best accuracy", "created", "finished"], rows, [4, 5]) :
            h("p", { class: "muted" }, "No runs in this store yet.")));
        main.querySelector("table")?.setAttribute("id", "runs-table");
      },
    };
  }

  // ----------------------------------------------------------------- one run
  function metricLines(rounds, names) {
    return names.map(([part, name]) => ({
      name: `${name} (${part === "train" ? "train" : "evaluation"})`,
      points: rounds.filter((r) => r[part][name] !== undefined && r[part][name] !== null).map((r) => [r.round, r[part][name]]),
    })).filter((s) => s.points.length);
  }

  function byName(rows, name, maxLines) {
    const lines = new Map();
    for (const r of rows) {
      if (r.name !== name || r.value === null) continue;
      const key = r.client_id || "server";
      if (!lines.has(key)) { if (lines.size >= maxLines) continue; lines.set(key, []); }
      lines.get(key).push([r.round, r.value]);
    }
    return [...lines].map(([k, pts]) => ({ name: k, points: pts }));
  }

  function picker(id, names, selected, onChange) {
    const sel = h("select", { id, onchange: (e) => onChange(e.target.value) }, names.map((n) => h("option", { value: n }, n)));
    sel.value = selected;
    return sel;
  }

  async function runPage(runId, state) {
    const enc = encodeURIComponent(runId);
    const [run, series, part, clients, rejections, system, models] = await Promise.all([
      apiGet(`/runs/${enc}`), apiGet(`/runs/${enc}/series`), apiGet(`/runs/${enc}/participation`),
      apiGet(`/runs/${enc}/clients?limit=5000&newest=true`), apiGet(`/runs/${enc}/rejections?limit=200`),
      apiGet(`/runs/${enc}/system?limit=5000&newest=true`), apiGet(`/runs/${enc}/models`),
    ]);
    const docs = { run, series, part, clients, rejections, system, models };
    return { key: JSON.stringify(docs) + JSON.stringify(state), render: (main) => renderRun(main, docs, state) };
  }

  // a DP run: the privacy spent so far (the newest stored privacy/epsilon), and why it stopped
  function privacyLine(p) {
    let text = `${p.mode || "user-level"} DP · ε = ${fmtValue(p.epsilon)}` + (p.delta !== null ? ` at δ = ${p.delta}` : "") + ` after round ${p.round}` + (p.epsilon_without_sampling !== null && p.epsilon_without_sampling !== undefined ? ` (${fmtValue(p.epsilon_without_sampling)} to whoever knows who was selected)` : "");
    if (p.stopped_at_target) text += ` · stopped: the next round would exceed the target ε ${fmtValue(p.target_epsilon)}`;
    else if (p.target_epsilon !== null) text += ` · target ε ${fmtValue(p.target_epsilon)}`;
    if (p.noise_reproducible) text += " · seeded noise: no privacy";
    return h("p", { id: "privacy", class: "privacy" }, text);
  }

  // a DP-SGD run: the largest worst-client ε so far (sample level: one example of one client)
  function samplePrivacyLine(p) {
    const text = `sample-level DP-SGD · ε = ${fmtValue(p.epsilon)}` + (p.delta !== null ? ` at δ = ${p.delta}` : "") + ` after round ${p.round} (the worst client; protects one example of one client)`;
    return h("p", { id: "sample-privacy", class: "privacy" }, text);
  }

  function renderRun(main, d, state) {
    const { run, series, part } = d;
    const rounds = series.rounds;
    const names = (d.clients.names && Object.keys(d.clients.names).length) ? d.clients.names : part.names;
    main.append(h("h1", {}, `${run.name} `, h("code", {}, run.short_id), " ", statusBadge(run.status)),
      h("p", { class: "muted" }, `${run.kind} · ${run.rounds_done} / ${run.rounds_planned ?? "?"} rounds · best accuracy ${fmtValue(run.best_accuracy)} · created ${when(run.created_at)}`));
    if (run.privacy) main.append(privacyLine(run.privacy));
    if (run.sample_privacy) main.append(samplePrivacyLine(run.sample_privacy));
    const acc = h("div", { id: "chart-accuracy" }), loss = h("div", { id: "chart-loss" });
    main.append(h("div", { class: "grid2 row-gap" }, card("Accuracy per round", acc), card("Loss per round", loss)));
    const heat = h("div", { id: "participation" });
    const partNote = part.truncated ? h("p", { class: "note" }, `showing ${part.clients.length} of ${part.total_clients} clients and ${part.rounds.length} of ${part.total_rounds} rounds`) : "";
    main.append(card("Participation (client × round)", heat, partNote));
    const timing = h("div", { id: "chart-seconds" }), updates = h("div", { id: "chart-updates" });
    main.append(h("div", { class: "grid2 row-gap" }, card("Seconds per round", timing), card("Updates aggregated per round", updates)));
    const clientNames = [...new Set(d.clients.rows.map((r) => r.name))].sort();
    const cm = state.clientMetric && clientNames.includes(state.clientMetric) ? state.clientMetric : clientNames[0];
    const cchart = h("div", { id: "chart-clients" });
    const sysNames = [...new Set(d.system.rows.map((r) => r.name))].sort();
    const sm = state.systemMetric && sysNames.includes(state.systemMetric) ? state.systemMetric : sysNames[0];
    const schart = h("div", { id: "chart-system" });
    main.append(h("div", { class: "grid2 row-gap" },
      card("Per-client metrics", clientNames.length ? h("div", { class: "toolbar" }, "metric ", picker("client-metric", clientNames, cm, (v) => state.set({ clientMetric: v }))) : h("p", { class: "muted" }, "No client metrics recorded."), cchart),
      card("System metrics (timings, bytes, CPU, memory)", sysNames.length ? h("div", { class: "toolbar" }, "metric ", picker("system-metric", sysNames, sm, (v) => state.set({ systemMetric: v }))) : h("p", { class: "muted" }, "No system metrics recorded for this run."), schart)));
    main.append(h("div", { class: "grid2" }, rejectionsCard(d.rejections, names), modelsCard(run, d.models)));
    later(() => {
      lineChart(acc, metricLines(rounds, [["eval", "accuracy"], ["train", "train_accuracy"]]), { title: "accuracy", empty: "no accuracy recorded for this run (yet)" });
      lineChart(loss, metricLines(rounds, [["eval", "loss"], ["train", "train_loss"]]), { title: "loss" });
      heatMap(heat, part.clients, part.rounds, part.cells, {
        c: { color: "#2ca02c", label: "contributed" }, r: { color: "#d62728", label: "refused" },
        s: { color: "#f3c969", label: "selected, no update" }, ".": { color: "#edf0f4", label: "not selected" },
      }, part.names);
      barChart(timing, rounds.filter((r) => r.seconds !== null).map((r) => ({ label: r.round, value: r.seconds })), { unit: " s" });
      barChart(updates, rounds.map((r) => ({ label: r.round, value: r.num_updates })), { color: "#9467bd" });
      if (cm) lineChart(cchart, byName(d.clients.rows, cm, MAX_LINES).map((s) => ({ ...s, name: names[s.name] || s.name })), {});
      if (sm) lineChart(schart, byName(d.system.rows, sm, MAX_LINES).map((s) => ({ ...s, name: names[s.name] || s.name })), {});
    });
  }

  function rejectionsCard(doc, names) {
    const rows = doc.rows.map((r) => [r.round ?? "–", (names && names[r.client_id]) || r.client_id || "–", h("code", {}, r.code), r.reason]);
    const body = rows.length ? h("div", { class: "scroll" }, table(["round", "client", "code", "reason"], rows)) : h("p", { class: "muted" }, "No rejections: every update and request was accepted.");
    const el = card(`Rejections (${doc.total})`, body, doc.truncated ? h("p", { class: "note" }, `showing the newest ${doc.rows.length} of ${doc.total}`) : "");
    el.id = "rejections";
    return el;
  }

  function modelsCard(run, doc) {
    const rows = doc.models.map((m) => [m.round, h("code", { title: m.sha256 }, m.sha256.slice(0, 16) + "…"), m.num_samples, when(m.created_at),
      m.downloadable ? h("button", { type: "button", class: "download", onclick: () => apiDownload(`/runs/${run.id}/models/${m.round}/download`, `${run.name}-${run.short_id}-round${m.round}.safetensors`) }, "download") : h("span", { class: "muted" }, "not kept")]);
    const el = card("Model lineage (global models)", rows.length ? h("div", { class: "scroll" }, table(["round", "sha256", "samples", "created", ""], rows, [2])) : h("p", { class: "muted" }, "No global model yet."));
    el.id = "models";
    return el;
  }

  // ----------------------------------------------------------------- agents
  async function agentsPage(runId, state) {
    const runs = (await apiGet("/runs?limit=100")).runs.filter((r) => r.kind === "deployment");
    const chosen = runId || (runs[0] && runs[0].id);
    const doc = chosen ? await apiGet(`/agents?run=${encodeURIComponent(chosen)}`) : { agents: [] };
    return {
      key: JSON.stringify([runs, doc]),
      render(main) {
        main.append(h("h1", {}, "Agents"));
        if (!runs.length) { main.append(card("No deployments", h("p", { class: "muted" }, "Agents exist only in deployed runs (fedloom server)."))); return; }
        const sel = picker("agents-run", runs.map((r) => r.id), chosen, (v) => { location.hash = `#/agents/${v}`; });
        [...sel.options].forEach((o, i) => { o.textContent = `${runs[i].name} (${runs[i].short_id}, ${runs[i].status})`; });
        const rows = doc.agents.map((a) => [a.name, a.role, when(a.last_seen_at), a.rounds_joined, a.refusals, h("code", {}, a.id.slice(0, 12))]);
        const t = table(["name", "role", "last seen", "rounds joined", "refusals", "id"], rows, [3, 4]);
        t.id = "agents-table";
        main.append(h("div", { class: "toolbar" }, "run ", sel), card(`${doc.agents.length} agents`, t));
      },
    };
  }

  // ----------------------------------------------------------------- compare
  async function comparePage(ids, state) {
    const runs = (await apiGet("/runs?limit=100")).runs;
    const chosen = ids.length ? ids : runs.slice(0, 2).map((r) => r.id);
    const metric = state.metric || "accuracy";
    const doc = chosen.length ? await apiGet(`/compare?ids=${chosen.join(",")}&metric=${encodeURIComponent(metric)}`) : { runs: [] };
    const names = chosen.length ? (await apiGet(`/runs/${chosen[0]}/series`)).metric_names : [];
    return {
      key: JSON.stringify([runs, doc, names, state]),
      render(main) {
        main.append(h("h1", {}, "Compare runs"));
        const boxes = runs.map((r) => h("label", {}, h("input", Object.assign({ type: "checkbox", value: r.id }, chosen.includes(r.id) ? { checked: "" } : {})), ` ${r.name} (${r.short_id}) `));
        const apply = h("button", { type: "button", onclick: () => {
          const picked = boxes.map((b) => b.querySelector("input")).filter((i) => i.checked).map((i) => i.value).slice(0, 8);
          location.hash = `#/compare/${picked.join(",")}`;
        } }, "compare");
        const metrics = [...new Set([metric, ...names])];
        const chart = h("div", { id: "chart-compare" });
        main.append(card("Runs (up to 8)", h("div", { class: "toolbar" }, boxes, apply)),
          card("Metric per round", h("div", { class: "toolbar" }, "metric ", picker("compare-metric", metrics, metric, (v) => state.set({ metric: v }))), chart));
        later(() => lineChart(chart, doc.runs.map((r) => ({ name: `${r.name} (${r.id.slice(0, 8)})`, points: r.points })), {}));
      },
    };
  }

  window.FedPages = { runsPage, runPage, agentsPage, comparePage };
})();
