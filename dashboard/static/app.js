/* streamkpi dashboard: polls snapshot.json every 2 s and redraws in place (no reload, no build step,
   no third-party code). Every value from the snapshot is put into the page as text (textContent),
   never as markup: page paths and charity ids come from events. */
'use strict';

(function () {
  const POLL_MS = 2000;
  const FETCH_TIMEOUT_MS = 5000;
  const SNAPSHOT_URL = 'snapshot.json';
  const SNAPSHOT_VERSION = 1;
  const SVG_NS = 'http://www.w3.org/2000/svg';

  const RANGES = ['1h', '24h', '7d', '30d'];

  const state = { snapshot: null, key: null, error: null, skewMs: 0, range: rangeFromHash(), noRanges: false, retryNow: false, timer: null, generation: 0 };

  // The range comes from the URL (#range=24h), so a link or a wall screen shows the same view.
  function rangeFromHash() {
    const match = /(?:^#|&)range=([0-9a-z]+)/.exec(window.location.hash || '');
    return match && RANGES.includes(match[1]) ? match[1] : '1h';
  }

  // The 1h range is snapshot.json itself; the others have their own (smaller, less often rewritten) file.
  const snapshotFile = () => (state.range === '1h' || state.noRanges ? SNAPSHOT_URL : `snapshot-${state.range}.json`);

  // -- formatting ---------------------------------------------------------------------------------
  const intFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const rateFormat = new Intl.NumberFormat(undefined, { minimumFractionDigits: 1, maximumFractionDigits: 1 });
  const plainMoney = new Intl.NumberFormat(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  const moneyFormats = new Map();

  const isNum = (v) => typeof v === 'number' && Number.isFinite(v);
  const fmtInt = (v) => (isNum(v) ? intFormat.format(Math.round(v)) : '–');
  const fmtRate = (v) => (isNum(v) ? rateFormat.format(v) : '–');

  function fmtMoney(amount, currency) {
    if (!isNum(amount)) return '–';
    if (!/^[A-Z]{3}$/.test(currency || '')) return plainMoney.format(amount) + (currency ? ` ${currency}` : '');
    let format = moneyFormats.get(currency);
    if (!format) {
      try {
        format = new Intl.NumberFormat(undefined, { style: 'currency', currency });
      } catch (_err) {
        format = { format: (v) => `${plainMoney.format(v)} ${currency}` };
      }
      moneyFormats.set(currency, format);
    }
    return format.format(amount);
  }

  const fmtAmounts = (list) => (list || []).map((a) => fmtMoney(a.amount, a.currency)).join(' · ');

  function fmtAge(seconds) {
    if (!isNum(seconds)) return '–';
    const s = Math.max(0, Math.floor(seconds));
    if (s < 60) return `${s} s`;
    if (s < 3600) {
      const m = Math.floor(s / 60);
      return m < 10 && s % 60 ? `${m} min ${s % 60} s` : `${m} min`;
    }
    if (s < 172800) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} days`;
  }

  function fmtBehind(ms) {
    if (!isNum(ms)) return '–';
    if (ms < 10000) return `${rateFormat.format(ms / 1000)} s`;
    return fmtAge(ms / 1000);
  }

  const utcTime = (ms) => new Date(ms).toISOString().slice(11, 19) + ' UTC';
  const utcMinute = (ms) => new Date(ms).toISOString().slice(11, 16);

  // -- DOM helpers --------------------------------------------------------------------------------
  const byId = (id) => document.getElementById(id);
  const field = (name) => document.querySelector(`[data-field="${name}"]`);

  function setText(el, text) {
    if (el && el.textContent !== text) el.textContent = text;
  }

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  function svg(tag, attrs, parent) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    if (parent) parent.appendChild(node);
    return node;
  }

  function showEmpty(id, message) {
    showEmptyById(id, message);
  }

  function showEmptyById(id, message) {
    const node = document.getElementById(id);
    node.hidden = !message;
    setText(node, message || '');
  }

  function fillBody(table, rows) {
    const body = table.tBodies[0];
    body.replaceChildren(...rows);
    table.hidden = rows.length === 0;
  }

  function row(cells, className) {
    const tr = el('tr', null, className);
    for (const cell of cells) tr.appendChild(cell);
    return tr;
  }

  const td = (text, className) => el('td', text, className);
  const num = (text) => el('td', text, 'num');
  function th(text, className) {
    const cell = el('th', text, className);
    cell.scope = 'row';
    return cell;
  }
  function colHead(text, className) {
    const cell = el('th', text, className);
    cell.scope = 'col';
    return cell;
  }

  // -- polling ------------------------------------------------------------------------------------
  async function poll() {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), FETCH_TIMEOUT_MS);
    const generation = state.generation;
    try {
      const file = snapshotFile();
      const response = await fetch(`${file}?t=${Date.now()}`, { cache: 'no-store', signal: controller.signal });
      if (response.status === 404 && file !== SNAPSHOT_URL) {
        state.noRanges = true; // an older publisher writes snapshot.json only: read that at once
        state.retryNow = true;
        return;
      }
      if (!response.ok) {
        let detail = `HTTP ${response.status}`;
        try {
          const body = await response.json();
          if (body && typeof body.error === 'string') detail += `: ${body.error}`;
        } catch (_err) { /* not JSON: the status says enough */ }
        throw new Error(detail);
      }
      const serverDate = Date.parse(response.headers.get('Date') || '');
      if (isNum(serverDate)) {
        // Judge the age on the server's clock when the browser's is far off (the Date header has 1 s steps).
        const skew = serverDate - Date.now();
        state.skewMs = Math.abs(skew) > 10000 ? skew : 0;
      }
      const snap = await response.json();
      if (!snap || snap.version !== SNAPSHOT_VERSION) {
        throw new Error(`snapshot version ${snap && snap.version} is not the version ${SNAPSHOT_VERSION} this page reads`);
      }
      if (generation !== state.generation) return; // the range changed while this one was on its way
      state.error = null;
      const key = `${snap.generatedAt} ${snap.range ? snap.range.id : ''}`;
      if (key !== state.key) {
        state.snapshot = snap;
        state.key = key;
        render(snap);
      }
    } catch (err) {
      if (generation === state.generation) {
        state.error = err && err.name === 'AbortError' ? 'no answer within 5 s' : String((err && err.message) || err);
      }
    } finally {
      clearTimeout(timer);
      if (generation === state.generation) {
        updateFreshness();
        clearTimeout(state.timer);
        state.timer = setTimeout(poll, state.retryNow ? 0 : POLL_MS);
        state.retryNow = false;
      }
    }
  }

  function chooseRange(range, fromHash) {
    if (!RANGES.includes(range)) return;
    if (!fromHash) history.replaceState(null, '', range === '1h' ? '#range=1h' : `#range=${range}`);
    markRange(range);
    if (range === state.range) return;
    state.range = range;
    state.generation += 1;
    state.key = null;
    clearTimeout(state.timer);
    poll();
  }

  function markRange(range) {
    for (const button of document.querySelectorAll('#ranges button[data-range]')) {
      button.setAttribute('aria-pressed', String(button.dataset.range === range));
    }
  }

  function updateFreshness() {
    const snap = state.snapshot;
    let mode;
    let text;
    let alert = null;
    if (!snap) {
      if (state.error) {
        mode = 'error';
        text = `Cannot load the snapshot (${state.error})`;
        alert = `No data: snapshot.json could not be loaded (${state.error}). Is the publisher running?`;
      } else {
        mode = 'loading';
        text = 'Loading the snapshot…';
      }
    } else {
      const age = Math.max(0, (Date.now() + state.skewMs - snap.generatedAtMs) / 1000);
      const limit = snap.staleAfterSeconds || 30;
      const at = utcTime(snap.generatedAtMs);
      if (state.error) {
        mode = 'error';
        text = `Cannot load the snapshot — showing data from ${fmtAge(age)} ago`;
        alert = `Warning: the snapshot could not be loaded (${state.error}). The numbers below are from ${at}.`;
      } else if (age > limit) {
        mode = 'stale';
        text = `Stale: data is ${fmtAge(age)} old (updated ${at})`;
        alert = `Warning: no new data since ${at}: the numbers below are more than ${limit} s old. `
          + 'The publisher has stopped, or cannot read the stores.';
      } else {
        mode = 'fresh';
        text = age < 1 ? `Updated just now · ${at}` : `Updated ${fmtAge(age)} ago · ${at}`;
      }
    }
    const freshness = byId('freshness');
    if (freshness.dataset.state !== mode) freshness.dataset.state = mode;
    if (document.body.dataset.state !== mode) document.body.dataset.state = mode;
    setText(byId('freshness-text'), text);
    const box = byId('alert');
    // role=alert announces every change: its text holds no ticking age (the status line has that), so it
    // changes only when the situation does.
    if (alert === null) {
      box.hidden = true;
    } else {
      setText(box, alert);
      box.hidden = false;
    }
  }

  // -- rendering ----------------------------------------------------------------------------------
  function render(snap) {
    setText(byId('stream-name'), snap.stream || '?');
    setText(byId('store-name'), snap.store || 'no store (unreadable)');
    renderProblems(snap.problems || []);
    byId('ranges').hidden = !snap.range; // an older publisher writes snapshot.json only, without ranges
    renderPanels(snap);
  }

  function renderProblems(problems) {
    const box = byId('problems');
    box.hidden = problems.length === 0;
    byId('problem-list').replaceChildren(...problems.map((p) => el('li', `${p.part}: ${p.message}`)));
  }

  // A vertical bar chart. rows: [{startMs, partial, values: {series: n|null}, total|null, label}]
  function barChart(container, rows, series, options) {
    const width = Math.max(280, Math.floor(container.clientWidth || 640));
    const height = width < 500 ? 180 : options.height || 220;
    const totals = rows.map((r) => (isNum(r.total) ? r.total : 0));
    const max = Math.max(0, ...totals);
    const { top, step } = yScale(max);
    const labels = [];
    for (let v = 0; v <= top + 1e-9; v += step) labels.push(v);
    const left = 10 + 7.5 * Math.max(...labels.map((v) => fmtInt(v).length));
    const right = 6;
    const plotTop = 8;
    const bottom = 24;
    const plotH = height - plotTop - bottom;
    const slot = (width - left - right) / Math.max(1, rows.length);
    const y = (v) => plotTop + plotH - (v / top) * plotH;

    const root = svg('svg', { viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', 'aria-label': options.label });
    const defs = svg('defs', {}, root);
    const hatchId = `${container.id}-hatch`;
    const hatch = svg('pattern', { id: hatchId, width: 6, height: 6, patternUnits: 'userSpaceOnUse', patternTransform: 'rotate(45)' }, defs);
    svg('rect', { width: 6, height: 6, fill: '#f4f5f7' }, hatch);
    svg('line', { x1: 0, y1: 0, x2: 0, y2: 6, stroke: '#c9ced6', 'stroke-width': 2 }, hatch);

    for (const v of labels) {
      svg('line', { class: 'gridline', x1: left, x2: width - right, y1: y(v), y2: y(v) }, root);
      const t = svg('text', { x: left - 6, y: y(v) + 4, 'text-anchor': 'end' }, root);
      t.textContent = fmtInt(v);
    }
    svg('line', { class: 'axis', x1: left, x2: width - right, y1: y(0), y2: y(0) }, root);

    const labelEvery = slot * 10 >= 44 ? 10 : slot * 20 >= 44 ? 20 : 30;
    const nowLabel = rows.length > 0 && rows[rows.length - 1].partial;
    const nowRoom = Math.ceil(40 / slot); // no time label this close to the "now" label
    rows.forEach((r, i) => {
      const x = left + i * slot;
      const g = svg('g', { class: `minute${r.partial ? ' partial' : ''}` }, root);
      svg('title', {}, g).textContent = r.label;
      if (r.total === null) {
        svg('rect', { class: 'unknown', x, y: plotTop, width: slot, height: plotH, fill: `url(#${hatchId})` }, g);
      } else {
        svg('rect', { class: 'hover', x, y: plotTop, width: slot, height: plotH }, g);
        const barW = Math.max(1, slot * 0.8);
        let base = 0;
        for (const name of series) {
          const v = r.values[name] || 0;
          if (v <= 0) continue;
          const y0 = y(base + v);
          svg('rect', { class: `bar-${name}`, x: x + (slot - barW) / 2, y: y0, width: barW, height: Math.max(0.5, y(base) - y0) }, g);
          base += v;
        }
      }
      const minute = Math.floor(r.startMs / 60000);
      const isNow = nowLabel && i === rows.length - 1;
      if (isNow || (minute % labelEvery === 0 && !(nowLabel && i >= rows.length - 1 - nowRoom))) {
        const t = svg('text', { x: x + slot / 2, y: height - 6, 'text-anchor': isNow ? 'end' : 'middle' }, root);
        t.textContent = isNow ? 'now' : utcMinute(r.startMs);
        if (isNow) t.setAttribute('x', String(x + slot));
      }
    });
    container.replaceChildren(root);
  }

  function yScale(max) {
    if (max <= 0) return { top: 4, step: 1 };
    const raw = max / 4;
    const exp = 10 ** Math.floor(Math.log10(raw));
    const f = raw / exp;
    const step = Math.max(1, (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * exp);
    return { top: Math.ceil(max / step) * step, step };
  }

  // One line per currency: amounts in different currencies are never added up.
  function amountsCell(amounts) {
    const cell = num(amounts && amounts.length ? null : '–');
    for (const a of amounts || []) cell.appendChild(el('span', fmtMoney(a.amount, a.currency), 'amount'));
    return cell;
  }

  function renderInvalid(snap) {
    const inv = snap.invalid || { perMinute: [], topReasons: [] };
    const minutes = inv.perMinute || [];
    const container = byId('chart-invalid');
    if (!minutes.length) {
      container.replaceChildren();
      showEmpty('empty-invalid', `No invalid-event counts: ${inv.note || 'the shards’ health could not be read'}.`);
      setText(byId('invalid-source'), '');
    } else {
      const known = minutes.filter((m) => m.count !== null);
      const total = known.reduce((s, m) => s + m.count, 0);
      const current = Math.floor(snap.generatedAtMs / 60000) * 60000;
      const rows = minutes.map((m) => ({
        startMs: m.startMs,
        partial: m.startMs >= current,
        total: m.count,
        values: { invalid: m.count || 0 },
        label: m.count === null
          ? `${utcMinute(m.startMs)} UTC: not observed (before the publisher started)`
          : `${utcMinute(m.startMs)} UTC: ${fmtInt(m.count)} invalid events`,
      }));
      barChart(container, rows, ['invalid'], {
        height: 160,
        label: `Invalid events per minute: ${fmtInt(total)} in the ${known.length} minutes observed.`,
      });
      showEmpty('empty-invalid', total === 0 ? `No invalid events in the ${known.length} minutes observed.` : null);
      setText(byId('invalid-source'), `Counted from the workers' dead-letter counters (shard health) as the publisher saw them grow`
        + (inv.observedSinceMs ? `, since ${utcTime(inv.observedSinceMs)}; hatched minutes were not observed.` : '.'));
    }

    const table = byId('table-reasons');
    const reasons = inv.topReasons || [];
    if (!reasons.length) {
      fillBody(table, []);
      let why;
      if (inv.sampleEverySeconds === null || inv.sampleEverySeconds === undefined) why = 'DLQ sampling is off (--dlq-every 0), or the DLQ could not be read.';
      else if (!inv.sampledAt) why = 'The DLQ has not been sampled yet.';
      else why = 'The dead-letter queue is empty.';
      showEmpty('empty-reasons', why);
    } else {
      showEmpty('empty-reasons', null);
      fillBody(table, reasons.map((r) => {
        const name = th(null);
        name.appendChild(el('code', r.reason));
        if (r.meaning) name.appendChild(el('span', r.meaning.replace(/`/g, ''), 'status-text'));
        return row([name, num(fmtInt(r.count))]);
      }));
    }
    const parts = [];
    if (inv.queue) {
      parts.push(`The queue holds about ${fmtInt(inv.queue.visible)} letters`
        + (inv.queue.inFlight ? ` (+${fmtInt(inv.queue.inFlight)} in flight)` : '') + '.');
    }
    if (inv.sampledAt) {
      parts.push(`Reasons ${inv.sampleComplete ? 'of all' : 'among'} ${fmtInt(inv.sampled)} letters read at ${inv.sampledAt.slice(11, 19)} UTC`
        + (inv.sampleEverySeconds ? `, every ${fmtAge(inv.sampleEverySeconds)}` : '') + ' (never deleted).');
    }
    setText(byId('dlq-note'), parts.join(' '));
  }

  function renderShards(snap) {
    const shards = snap.shards || { rows: [] };
    const table = byId('table-shards');
    if (!shards.rows.length) {
      fillBody(table, []);
      showEmpty('empty-shards', shards.note
        ? `No shard health: ${shards.note}.`
        : 'No shard has reported yet. Is the worker running (streamkpi consume)? Workers report to Redis while they process.');
      return;
    }
    showEmpty('empty-shards', null);
    fillBody(table, shards.rows.map((s) => {
      const status = td(null);
      status.appendChild(el('span', s.status, `status ${s.status}`));
      if (s.status !== 'ok') status.appendChild(el('span', s.statusText, 'status-text'));
      return row([
        th(s.shardId, 'nowrap'),
        status,
        num(fmtBehind(s.millisBehindLatest)),
        num(isNum(s.checkpointAgeSeconds) ? `${fmtAge(s.checkpointAgeSeconds)} ago` : 'never'),
        num(fmtRate(s.eventsPerSecond)),
        num(isNum(s.reportAgeSeconds) ? `${fmtAge(s.reportAgeSeconds)} ago` : 'never'),
        num(fmtInt(s.deadLetters)),
      ]);
    }));
  }

  // -- panels from the config ---------------------------------------------------------------------
  const PALETTE = 6;

  function fmtValue(v, agg) {
    if (!isNum(v)) return '–';
    if (agg === 'sum' || agg === 'min' || agg === 'max') {
      return Number.isInteger(v) ? intFormat.format(v) : plainMoney.format(v);
    }
    return intFormat.format(Math.round(v));
  }

  const withUnit = (text, unit) => (unit && text !== '–' ? `${text} ${unit}` : text);

  function stateText(p) {
    if (p.state !== 'warning' && p.state !== 'critical' || !p.thresholds) return null;
    const line = p.state === 'critical' ? p.thresholds.critical : p.thresholds.warn;
    const side = p.thresholds.direction === 'below' ? 'at or below' : 'at or above';
    const word = p.state === 'critical' ? 'Critical' : 'Warning';
    return `${word}: ${fmtValue(p.value, p.agg || 'sum')} is ${side} ${fmtValue(line, 'sum')}`;
  }

  function panelShell(p, tag, className) {
    const node = el(tag, null, className);
    node.id = `panel-${p.id}`;
    node.dataset.panel = p.id;
    node.dataset.kind = p.kind;
    node.dataset.state = p.state || 'none';
    const heading = el('h2', p.title);
    heading.id = `h-${p.id}`;
    node.setAttribute('aria-labelledby', heading.id);
    node.appendChild(heading);
    const warning = stateText(p);
    if (warning) {
      const line = el('p', warning, 'state-text');
      line.dataset.field = `${p.id}-state`;
      node.appendChild(line);
    }
    return node;
  }

  // Stats and the pipeline's own numbers (health view "rate", dlq view "stat") are cards in a row.
  const isCard = (p) => p.kind === 'stat' || (p.kind === 'health' && p.view === 'rate') || (p.kind === 'dlq' && p.view === 'stat');

  function renderPanels(snap) {
    const range = snap.range ? snap.range.id : state.range;
    markRange(range);
    const root = byId('panels');
    const nodes = [];
    let kpis = null;
    for (const p of snap.panels || []) {
      if (isCard(p)) {
        if (!kpis) {
          kpis = el('section', null, 'kpis');
          kpis.setAttribute('aria-label', 'Key numbers');
          nodes.push(kpis);
        }
        kpis.appendChild(p.kind === 'stat' ? statPanel(p, snap) : p.kind === 'health' ? rateCard(p, snap) : invalidCard(p, snap));
      } else {
        kpis = null;
        const maker = { timeseries: seriesPanel, top: tablePanel, breakdown: tablePanel, health: healthPanel, dlq: dlqPanel }[p.kind];
        if (maker) nodes.push(maker(p, snap));
      }
    }
    root.replaceChildren(...nodes);
    // The health table and the DLQ chart fill their panel's markup (at most one of each on a page).
    for (const p of snap.panels || []) {
      if (p.kind === 'health' && p.view !== 'rate') renderShards(snap);
      if (p.kind === 'dlq' && p.view !== 'stat') renderInvalid(snap);
    }
    for (const p of snap.panels || []) {
      if (p.kind === 'timeseries' && p.points) drawSeries(byId(`chart-${p.id}`), p, snap);
    }
  }

  function card(p, valueText) {
    const node = panelShell(p, 'article', 'kpi');
    const value = el('p', valueText, 'value');
    value.dataset.field = p.id;
    node.insertBefore(value, node.children[1] || null);
    return node;
  }

  function cardNote(node, p, text) {
    const note = el('p', text, 'note');
    note.dataset.field = `${p.id}-note`;
    node.appendChild(note);
  }

  function rateCard(p, snap) {
    const rate = snap.rate || {};
    const last = rate.lastMinute;
    let value;
    let note;
    if (isNum(rate.eventsPerSecond)) {
      value = fmtRate(rate.eventsPerSecond);
      note = last ? `workers' rate now · last whole minute ${fmtInt(last.total)} events (${fmtRate(last.perSecond)}/s)` : "workers' rate now";
    } else if (last) {
      value = fmtRate(last.perSecond);
      note = `average of the last whole minute (${utcMinute(last.startMs)}); no worker reports a rate now`;
    } else {
      value = '–';
      note = 'no rate: no worker reports one and no minute could be read';
    }
    const node = card(p, value);
    cardNote(node, p, note);
    return node;
  }

  function invalidCard(p, snap) {
    const inv = snap.invalid || {};
    let note;
    if (!isNum(inv.lastHour)) note = inv.note || 'not available';
    else {
      note = isNum(inv.perSecond) ? `${fmtRate(inv.perSecond)}/s over the last minute` : 'rate not known yet';
      if (inv.observedSinceMs && snap.generatedAtMs - inv.observedSinceMs < 3600000) {
        note += ` · counted since ${utcMinute(inv.observedSinceMs)} UTC`;
      }
    }
    const node = card(p, fmtInt(inv.lastHour));
    cardNote(node, p, note);
    return node;
  }

  // A detail's text: {value} filled in (amounts per currency, never added up), or why there is none.
  function detailText(d) {
    if (!d) return '';
    if (d.note) return d.note;
    if (d.amounts) return d.amounts.length ? d.text.replace('{value}', fmtAmounts(d.amounts)) : (d.empty || '');
    if (!isNum(d.value)) return '';
    if (d.value === 0 && d.empty) return d.empty;
    return d.text.replace('{value}', fmtValue(d.value, d.agg));
  }

  function statPanel(p, snap) {
    const card = panelShell(p, 'article', 'kpi');
    const value = el('p', null, 'value');
    value.dataset.field = p.id;
    if (p.amounts) {
      value.classList.add('amounts');
      setText(value, p.amounts.length ? fmtAmounts(p.amounts) : '–');
    } else {
      setText(value, fmtValue(p.value, p.agg));
      if (p.unit && isNum(p.value)) value.appendChild(el('span', ` ${p.unit}`, 'unit'));
    }
    card.insertBefore(value, card.children[1] || null);
    let note = p.note || detailText(p.detail);
    if (!note && p.amounts && !p.amounts.length) note = 'none in this range';
    if (!note) note = p.period === 'today' ? 'since 00:00 UTC' : (snap.range ? snap.range.label : '');
    const noteNode = el('p', note, 'note');
    noteNode.dataset.field = `${p.id}-note`;
    card.appendChild(noteNode);
    if (p.compare) card.appendChild(compareLine(p));
    if (p.spark && p.spark.some(isNum)) card.appendChild(sparkline(p, snap));
    return card;
  }

  function compareLine(p) {
    const c = p.compare;
    const line = el('p', null, 'compare');
    line.dataset.field = `${p.id}-compare`;
    if (isNum(c.change)) {
      const pct = Math.abs(c.change * 100);
      const arrow = c.change > 0 ? '▲' : c.change < 0 ? '▼' : '=';
      const word = c.change > 0 ? 'up' : c.change < 0 ? 'down' : 'same';
      const strong = el('span', `${arrow} ${rateFormat.format(pct)} %`, c.change > 0 ? 'up' : 'down');
      strong.setAttribute('aria-label', `${word} ${rateFormat.format(pct)} percent`);
      line.appendChild(strong);
      line.appendChild(document.createTextNode(` ${c.label} (${withUnit(fmtValue(c.value, p.agg), p.unit)})`));
    } else if (c.amounts) {
      line.textContent = `${c.label}: ${c.amounts.length ? fmtAmounts(c.amounts) : 'none'}`;
    } else if (isNum(c.value)) {
      line.textContent = `${c.label}: ${withUnit(fmtValue(c.value, p.agg), p.unit)}`;
    } else {
      line.textContent = `${c.label}: ${c.note || 'no data then'}`;
    }
    return line;
  }

  function sparkline(p, snap) {
    const values = p.spark.map((v) => (isNum(v) ? v : 0));
    const max = Math.max(1e-9, ...values);
    const w = 200;
    const h = 32;
    const step = values.length > 1 ? w / (values.length - 1) : w;
    const points = values.map((v, i) => `${(i * step).toFixed(1)},${(h - 2 - (v / max) * (h - 4)).toFixed(1)}`);
    const first = values[0];
    const last = values[values.length - 1];
    const label = `Trend of ${p.title} over the ${snap.range ? snap.range.label : 'range'}: `
      + `${fmtValue(first, p.agg)} at the start, ${fmtValue(last, p.agg)} now, highest ${fmtValue(Math.max(...values), p.agg)}.`;
    const root = svg('svg', { class: 'spark', viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: 'none', role: 'img', 'aria-label': label });
    svg('polyline', { points: points.join(' ') }, root);
    return root;
  }

  function seriesClass(index, id) {
    return id === 'other' && index > 0 ? 'other' : `s${index % PALETTE}`;
  }

  function seriesPanel(p, snap) {
    const section = panelShell(p, 'section', 'panel wide');
    const head = el('div', null, 'panel-head');
    head.appendChild(section.firstChild); // the heading, with its legend beside it
    const legend = el('ul', null, 'legend');
    legend.id = `legend-${p.id}`;
    legend.setAttribute('aria-label', `Legend: ${p.byLabel || p.title}`);
    const series = p.series || [];
    series.forEach((s, i) => {
      const li = el('li');
      const swatch = el('span', null, `swatch ${seriesClass(i, s.id)}`);
      swatch.setAttribute('aria-hidden', 'true');
      li.appendChild(swatch);
      li.appendChild(el('span', s.label));
      if (s.types) li.appendChild(el('span', s.types.length ? `(${s.types.join(', ')})` : `(${s.description || 'the rest'})`, 'types'));
      legend.appendChild(li);
    });
    const points = p.points || [];
    const word = windowWord(p.resolution);
    if (p.style !== 'lines' && points.some((pt) => pt.partial)) {
      const li = el('li');
      li.appendChild(el('span', null, 'swatch partial'));
      li.appendChild(el('span', `current ${word}, still filling`));
      legend.appendChild(li);
    }
    head.appendChild(legend);
    section.insertBefore(head, section.firstChild);
    const chart = el('div', null, 'chart');
    chart.id = `chart-${p.id}`;
    section.appendChild(chart);
    const total = points.reduce((sum, pt) => sum + (isNum(pt.total) ? pt.total : 0), 0);
    if (!p.points || total === 0) {
      const empty = el('p', p.points ? (p.emptyText || `Nothing in the ${snap.range ? snap.range.label : 'range'}.`)
        : `No numbers: ${p.note || 'they could not be read'}.`, 'empty');
      empty.id = `empty-${p.id}`;
      section.appendChild(empty);
    }
    // The same numbers as a table, for screen readers and for copying.
    const details = el('details', null, 'data-table');
    details.appendChild(el('summary', 'Show these numbers as a table'));
    const scroll = el('div', null, 'table-scroll');
    const table = el('table');
    table.id = `table-${p.id}`;
    table.appendChild(el('caption', `${p.title}${p.byLabel ? ` by ${p.byLabel}` : ''}`));
    const thead = el('thead');
    thead.appendChild(row([colHead(`${word[0].toUpperCase()}${word.slice(1)} (UTC)`), ...series.map((s) => colHead(s.label, 'num')), colHead('Total', 'num')]));
    table.appendChild(thead);
    table.appendChild(el('tbody'));
    fillBody(table, points.slice().reverse().map((pt) => row([
      th(timeLabel(pt.startMs, p.resolution) + (pt.partial ? ' (filling)' : '')),
      ...series.map((s) => num(fmtValue(pt.values[s.id] || 0, p.agg))),
      num(fmtValue(pt.total, p.agg)),
    ])));
    scroll.appendChild(table);
    details.appendChild(scroll);
    section.appendChild(details);
    if (!p.points || total === 0) p.points = null;
    return section;
  }

  const windowWord = (resolution) => ({ '1m': 'minute', '1h': 'hour', '1d': 'day' }[resolution] || 'window');

  function timeLabel(ms, resolution) {
    const iso = new Date(ms).toISOString();
    if (resolution === '1d') return iso.slice(5, 10);
    if (resolution === '1h') return `${iso.slice(5, 10)} ${iso.slice(11, 13)}h`;
    return iso.slice(11, 16);
  }

  function drawSeries(container, p, snap) {
    const width = Math.max(280, Math.floor(container.clientWidth || 640));
    const height = width < 500 ? 180 : 220;
    const ids = p.series.map((s) => s.id);
    const stacked = p.style !== 'lines';
    const tops = p.points.map((pt) => (stacked ? (isNum(pt.total) ? pt.total : 0)
      : Math.max(0, ...ids.map((id) => (isNum(pt.values[id]) ? pt.values[id] : 0)))));
    const { top, step } = yScale(Math.max(0, ...tops));
    const ticks = [];
    for (let v = 0; v <= top + 1e-9; v += step) ticks.push(v);
    const left = 10 + 7.5 * Math.max(...ticks.map((v) => fmtInt(v).length));
    const right = 6;
    const plotTop = 8;
    const bottom = 24;
    const plotH = height - plotTop - bottom;
    const slot = (width - left - right) / Math.max(1, p.points.length);
    const y = (v) => plotTop + plotH - (v / top) * plotH;
    const busiest = p.points.reduce((a, b) => ((b.total || 0) > (a.total || 0) ? b : a));
    const label = `${p.title}, ${stacked ? 'stacked' : 'lines'} by ${p.byLabel || ids.join(', ')}: `
      + `${fmtValue(p.points.reduce((sum, pt) => sum + (pt.total || 0), 0), p.agg)} in all; busiest ${windowWord(p.resolution)} `
      + `${timeLabel(busiest.startMs, p.resolution)} UTC with ${fmtValue(busiest.total, p.agg)}.`;
    const root = svg('svg', { viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', 'aria-label': label });
    for (const v of ticks) {
      svg('line', { class: 'gridline', x1: left, x2: width - right, y1: y(v), y2: y(v) }, root);
      svg('text', { x: left - 6, y: y(v) + 4, 'text-anchor': 'end' }, root).textContent = fmtInt(v);
    }
    svg('line', { class: 'axis', x1: left, x2: width - right, y1: y(0), y2: y(0) }, root);
    const every = Math.max(1, Math.ceil(70 / slot));
    p.points.forEach((pt, i) => {
      const x = left + i * slot;
      const g = svg('g', { class: `window ${windowWord(p.resolution)}${pt.partial ? ' partial' : ''}` }, root);
      svg('title', {}, g).textContent = `${timeLabel(pt.startMs, p.resolution)} UTC${pt.partial ? ' (still filling)' : ''}: `
        + p.series.map((s) => `${s.label} ${fmtValue(pt.values[s.id], p.agg)}`).join(', ');
      svg('rect', { class: 'hover', x, y: plotTop, width: slot, height: plotH }, g);
      if (stacked) {
        const barW = Math.max(1, slot * 0.8);
        let base = 0;
        ids.forEach((id, k) => {
          const v = pt.values[id] || 0;
          if (v <= 0) return;
          const y0 = y(base + v);
          svg('rect', { class: `bar-${seriesClass(k, id)}`, x: x + (slot - barW) / 2, y: y0, width: barW, height: Math.max(0.5, y(base) - y0) }, g);
          base += v;
        });
      }
      if ((p.points.length - 1 - i) % every === 0) {
        const last = i === p.points.length - 1;
        const t = svg('text', { x: last ? x + slot : x + slot / 2, y: height - 6, 'text-anchor': last ? 'end' : 'middle' }, root);
        t.textContent = last && pt.partial ? 'now' : timeLabel(pt.startMs, p.resolution);
      }
    });
    if (!stacked) {
      ids.forEach((id, k) => {
        const pts = p.points.map((pt, i) => `${(left + i * slot + slot / 2).toFixed(1)},${y(pt.values[id] || 0).toFixed(1)}`);
        svg('polyline', { class: `line-${seriesClass(k, id)}`, points: pts.join(' ') }, root);
      });
    }
    container.replaceChildren(root);
  }

  function tablePanel(p, snap) {
    const section = panelShell(p, 'section', 'panel');
    const rows = p.rows || [];
    const share = p.kind === 'breakdown' && p.additive && !p.bands;
    if (share && rows.length) {
      const bar = el('div', null, 'share-bar');
      bar.setAttribute('aria-hidden', 'true');
      rows.forEach((r, i) => {
        const part = el('span', null, `swatch s${i % PALETTE}`);
        part.style.width = `${Math.max(0, (r.share || 0) * 100)}%`;
        bar.appendChild(part);
      });
      section.appendChild(bar);
    }
    const table = el('table', null, 'numbers');
    table.id = `table-${p.id}`;
    const caption = el('caption', `${p.title}: ${p.byLabel || p.dimension || 'group'}, ${p.valueLabel || 'value'}${p.join ? `, ${p.join.label}` : ''}`, 'visually-hidden');
    table.appendChild(caption);
    const head = el('thead');
    const cols = [colHead(p.byLabel || p.dimension || 'group'), colHead(p.valueLabel || 'value', 'num')];
    if (p.join) cols.push(colHead(p.join.label, 'num'));
    if (share) cols.push(colHead('share', 'num'));
    head.appendChild(row(cols));
    table.appendChild(head);
    table.appendChild(el('tbody'));
    const max = Math.max(1e-9, ...rows.map((r) => (isNum(r.value) ? r.value : 0)));
    const money = p.currency && p.currency === p.dimension;
    const label = (name) => (name === p.otherName ? (p.otherLabel || 'all other') : name);
    const body = [];
    if (p.bands) { // a row per band, its groups under it
      const total = rows.reduce((sum, r) => sum + (isNum(r.value) ? r.value : 0), 0);
      if (total > 0) {
        rows.forEach((r, i) => {
          const name = th(null);
          const sw = el('span', null, `swatch ${seriesClass(i, r.band)}`);
          sw.setAttribute('aria-hidden', 'true');
          name.append(sw, document.createTextNode(` ${r.name}`));
          body.push(row([name, num(fmtValue(r.value, p.agg))], 'level-row'));
          for (const c of r.children || []) body.push(row([th(c.name), num(fmtValue(c.value, p.agg))], 'type-row'));
        });
      }
    } else {
      rows.forEach((r, i) => {
        const name = th(label(r.name), 'path');
        if (p.kind === 'breakdown') {
          const sw = el('span', null, `swatch s${i % PALETTE}`);
          sw.setAttribute('aria-hidden', 'true');
          name.prepend(sw, document.createTextNode(' '));
        } else {
          const bar = el('span', null, 'bar-cell');
          bar.style.width = `${Math.max(2, (100 * (r.value || 0)) / max)}%`;
          bar.setAttribute('aria-hidden', 'true');
          name.appendChild(bar);
        }
        const cells = [name, num(money ? fmtMoney(r.value, r.name) : fmtValue(r.value, p.agg))];
        if (p.join) cells.push(joinCell(p.join, r.name));
        if (share) cells.push(num(isNum(r.share) ? `${rateFormat.format(r.share * 100)} %` : '–'));
        body.push(row(cells));
      });
      if (isNum(p.other) && p.other > 0) {
        const cells = [th(p.otherLabel || 'all other'), num(fmtValue(p.other, p.agg))];
        if (p.join) cells.push(joinCell(p.join, p.otherName));
        if (share) cells.push(num(isNum(p.value) && p.value ? `${rateFormat.format((100 * p.other) / p.value)} %` : '–'));
        body.push(row(cells));
      }
    }
    fillBody(table, body);
    section.appendChild(table);
    if (!body.length) {
      const empty = el('p', p.note ? `No numbers: ${p.note}.` : (p.emptyText || `Nothing in the ${snap.range ? snap.range.label : 'range'}.`), 'empty');
      empty.id = `empty-${p.id}`;
      section.appendChild(empty);
    }
    if (p.detail) {
      const note = el('p', detailText(p.detail), 'note');
      note.id = `${p.id}-detail`;
      note.dataset.field = `${p.id}-detail`;
      section.appendChild(note);
    }
    return section;
  }

  // The joined metric of a row: one line per currency (amounts in different currencies are never added up).
  function joinCell(join, name) {
    const values = (join.values || {})[name];
    if (!join.currency) return num(values && values.length ? fmtValue(values[0].amount, 'sum') : '–');
    return amountsCell(values);
  }

  // The health table and the DLQ chart: their markup is a <template> in index.html (fixed ids: one of each).
  function fromTemplate(p, id) {
    const section = panelShell(p, 'section', 'panel wide');
    section.appendChild(document.getElementById(id).content.cloneNode(true));
    return section;
  }

  const healthPanel = (p) => fromTemplate(p, 'tpl-health');
  const dlqPanel = (p) => fromTemplate(p, 'tpl-dlq');

  // -- start --------------------------------------------------------------------------------------
  for (const button of document.querySelectorAll('#ranges button[data-range]')) {
    button.addEventListener('click', () => chooseRange(button.dataset.range, false));
  }
  window.addEventListener('hashchange', () => chooseRange(rangeFromHash(), true));
  markRange(state.range);
  let resizeTimer = null;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { if (state.snapshot) render(state.snapshot); }, 150);
  });
  setInterval(updateFreshness, 1000);
  poll();
})();
