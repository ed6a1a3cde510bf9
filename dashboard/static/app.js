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
  const LEVELS = ['low', 'mid', 'high', 'other'];

  const state = { snapshot: null, key: null, error: null, skewMs: 0 };

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
    const node = byId(id);
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
    try {
      const response = await fetch(`${SNAPSHOT_URL}?t=${Date.now()}`, { cache: 'no-store', signal: controller.signal });
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
      state.error = null;
      if (snap.generatedAt !== state.key) {
        state.snapshot = snap;
        state.key = snap.generatedAt;
        render(snap);
      }
    } catch (err) {
      state.error = err && err.name === 'AbortError' ? 'no answer within 5 s' : String((err && err.message) || err);
    } finally {
      clearTimeout(timer);
      updateFreshness();
      setTimeout(poll, POLL_MS);
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
    renderKpis(snap);
    renderLegend(snap.levels || []);
    renderMinutes(snap);
    renderLevels(snap);
    renderPages(snap);
    renderDonations(snap);
    renderInvalid(snap);
    renderShards(snap);
  }

  function renderProblems(problems) {
    const box = byId('problems');
    box.hidden = problems.length === 0;
    byId('problem-list').replaceChildren(...problems.map((p) => el('li', `${p.part}: ${p.message}`)));
  }

  function renderKpis(snap) {
    const rate = snap.rate || {};
    const last = rate.lastMinute;
    if (isNum(rate.eventsPerSecond)) {
      setText(field('rate'), fmtRate(rate.eventsPerSecond));
      setText(field('rate-note'), last
        ? `workers' rate now · last whole minute ${fmtInt(last.total)} events (${fmtRate(last.perSecond)}/s)`
        : "workers' rate now");
    } else if (last) {
      setText(field('rate'), fmtRate(last.perSecond));
      setText(field('rate-note'), `average of the last whole minute (${utcMinute(last.startMs)}); no worker reports a rate now`);
    } else {
      setText(field('rate'), '–');
      setText(field('rate-note'), 'no rate: no worker reports one and no minute could be read');
    }

    const today = snap.today || {};
    setText(field('events-today'), fmtInt(today.events));
    setText(field('events-today-note'), isNum(today.events) ? 'since 00:00 UTC' : today.note || 'not available');

    const d = snap.donations || {};
    setText(field('donations-count'), fmtInt(d.count));
    let amount;
    if (!isNum(d.count)) amount = d.note || 'not available';
    else if (!d.amounts || d.amounts.length === 0) amount = d.count ? 'amount unknown' : 'none yet today';
    else amount = fmtAmounts(d.amounts);
    setText(field('donations-amount'), amount);

    const u = snap.users || {};
    setText(field('signups'), fmtInt(u.signups));
    setText(field('verifications'), isNum(u.verifications) ? `${fmtInt(u.verifications)} verifications` : u.note || 'not available');
    setText(field('distinct-today'), fmtInt(u.distinctToday));
    setText(field('distinct-hour'), isNum(u.distinctLastHour)
      ? `${fmtInt(u.distinctLastHour)} in the last 60 min (estimates)`
      : isNum(u.distinctToday) ? 'estimate (HyperLogLog)' : u.note || 'not available');

    const inv = snap.invalid || {};
    setText(field('invalid-hour'), fmtInt(inv.lastHour));
    let invalidNote;
    if (!isNum(inv.lastHour)) invalidNote = inv.note || 'not available';
    else {
      invalidNote = isNum(inv.perSecond) ? `${fmtRate(inv.perSecond)}/s over the last minute` : 'rate not known yet';
      if (inv.observedSinceMs && snap.generatedAtMs - inv.observedSinceMs < 3600000) {
        invalidNote += ` · counted since ${utcMinute(inv.observedSinceMs)} UTC`;
      }
    }
    setText(field('invalid-note'), invalidNote);
  }

  function levelInfo(snap) {
    const info = {};
    for (const level of snap.levels || []) info[level.id] = level;
    return info;
  }

  function renderLegend(levels) {
    const items = levels.map((level) => {
      const li = el('li');
      li.appendChild(el('span', null, `swatch ${level.id}`));
      li.appendChild(el('span', level.label));
      li.appendChild(el('span', level.types.length ? `(${level.types.join(', ')})` : `(${level.description})`, 'types'));
      return li;
    });
    const partial = el('li');
    partial.appendChild(el('span', null, 'swatch partial'));
    partial.appendChild(el('span', 'current minute, still filling'));
    items.push(partial);
    byId('legend').replaceChildren(...items);
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

  function renderMinutes(snap) {
    const section = snap.perMinute || { minutes: [] };
    const minutes = section.minutes || [];
    const info = levelInfo(snap);
    const container = byId('chart-minutes');
    const total = minutes.reduce((sum, m) => sum + (m.total || 0), 0);
    if (minutes.length === 0 || total === 0) {
      container.replaceChildren();
      showEmpty('empty-minutes', minutes.length === 0
        ? `No per-minute numbers: ${section.note || 'they could not be read'}.`
        : 'No events in the last 60 minutes (by event time). Is traffic reaching the stream, and is the worker running? See the shard health below.');
    } else {
      showEmpty('empty-minutes', null);
      const rows = minutes.map((m) => ({
        startMs: m.startMs,
        partial: m.partial,
        total: m.total,
        values: m,
        label: `${utcMinute(m.startMs)} UTC${m.partial ? ' (still filling)' : ''}: ${fmtInt(m.total)} events — `
          + LEVELS.map((id) => `${(info[id] || { label: id }).label} ${fmtInt(m[id])}`).join(', '),
      }));
      const busiest = minutes.reduce((a, b) => (b.total > a.total ? b : a));
      const summary = `Events per minute over the last 60 minutes, stacked by level: ${fmtInt(total)} in all; `
        + `busiest minute ${utcMinute(busiest.startMs)} UTC with ${fmtInt(busiest.total)}.`;
      barChart(container, rows, LEVELS, { label: summary });
    }
    const table = byId('table-minutes');
    const head = row([colHead('Minute (UTC)'), ...LEVELS.map((id) => colHead((info[id] || { label: id }).label, 'num')), colHead('Total', 'num')]);
    table.tHead.replaceChildren(head);
    fillBody(table, minutes.slice().reverse().map((m) => row([
      th(utcMinute(m.startMs) + (m.partial ? ' (filling)' : '')),
      ...LEVELS.map((id) => num(fmtInt(m[id]))),
      num(fmtInt(m.total)),
    ])));
  }

  function renderLevels(snap) {
    const today = snap.today || {};
    const table = byId('table-levels');
    if (!isNum(today.events) || !today.byLevel) {
      fillBody(table, []);
      showEmpty('empty-levels', `No numbers for today: ${today.note || 'they could not be read'}.`);
      return;
    }
    if (today.events === 0) {
      fillBody(table, []);
      showEmpty('empty-levels', 'No events yet today (UTC).');
      return;
    }
    showEmpty('empty-levels', null);
    const rows = [];
    for (const level of snap.levels || []) {
      const head = th(null);
      head.appendChild(el('span', null, `swatch ${level.id}`));
      head.lastChild.setAttribute('aria-hidden', 'true');
      head.appendChild(document.createTextNode(` ${level.label}`));
      rows.push(row([head, num(fmtInt(today.byLevel[level.id]))], 'level-row'));
      for (const t of today.byType.filter((x) => x.level === level.id)) {
        rows.push(row([th(t.type === '__other__' ? 'other types' : t.type), num(fmtInt(t.count))], 'type-row'));
      }
    }
    fillBody(table, rows);
  }

  function renderPages(snap) {
    const pages = snap.topPages || { rows: [] };
    const table = byId('table-pages');
    if (!pages.rows.length) {
      fillBody(table, []);
      showEmpty('empty-pages', pages.note ? `No page views to show: ${pages.note}.` : 'No page views yet today (UTC).');
      return;
    }
    showEmpty('empty-pages', null);
    const max = Math.max(...pages.rows.map((p) => p.views), 1);
    const rows = pages.rows.map((p) => {
      const name = th(p.path, 'path');
      const bar = el('span', null, 'bar-cell');
      bar.style.width = `${Math.max(2, (100 * p.views) / max)}%`;
      bar.setAttribute('aria-hidden', 'true');
      name.appendChild(bar);
      return row([name, num(fmtInt(p.views))]);
    });
    if (pages.otherViews > 0) rows.push(row([th('all other pages'), num(fmtInt(pages.otherViews))]));
    fillBody(table, rows);
  }

  // One line per currency: amounts in different currencies are never added up.
  function amountsCell(amounts) {
    const cell = num(amounts && amounts.length ? null : '–');
    for (const a of amounts || []) cell.appendChild(el('span', fmtMoney(a.amount, a.currency), 'amount'));
    return cell;
  }

  function renderDonations(snap) {
    const d = snap.donations || { byCharity: [] };
    const table = byId('table-donations');
    if (!d.byCharity || !d.byCharity.length) {
      fillBody(table, []);
      showEmpty('empty-donations', !isNum(d.count) ? `No donation numbers: ${d.note || 'they could not be read'}.` : 'No donations yet today (UTC).');
    } else {
      showEmpty('empty-donations', null);
      fillBody(table, d.byCharity.map((c) => row([
        th(c.charity === '__other__' ? 'other charities' : c.charity),
        num(fmtInt(c.count)),
        amountsCell(c.amounts),
      ])));
    }
    setText(byId('donations-largest'), d.largest && d.largest.length ? `Largest donation today: ${fmtAmounts(d.largest)}` : '');
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

  // -- start --------------------------------------------------------------------------------------
  let resizeTimer = null;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { if (state.snapshot) render(state.snapshot); }, 150);
  });
  setInterval(updateFreshness, 1000);
  poll();
})();
