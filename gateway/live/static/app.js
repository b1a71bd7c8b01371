// The live view's page: applies the gateway's Server-Sent Events (gateway/live/live-feed.ts, LiveMessage)
// to its own copy of the state and redraws at most once a frame. Plain script, no build; uPlot is the
// global `uPlot`. Every value from the feed goes into the DOM as text, never as markup.
(() => {
  const HISTORY_S = 300;
  const READING_ROWS = 100;
  const RETRY_CLOSED_MS = 5000;
  const MIN_CHART_SPAN_S = 60;

  const token = new URLSearchParams(location.search).get('token');
  const query = token ? `?token=${encodeURIComponent(token)}` : '';
  const $ = (id) => document.getElementById(id);

  const state = {
    now: 0,
    totals: undefined,
    devices: undefined,
    status: undefined,
    series: { x: [], events: [], deadletters: [], reporting: [], online: [] },
    readings: new Map(),
    fresh: new Set(),
    alerts: { firing: 0, list: [] },
    deadletters: [],
    tenants: [],
    updates: 0,
  };

  function apply(msg) {
    if (msg.full) {
      state.readings.clear();
      for (const k of Object.keys(state.series)) state.series[k] = [];
    }
    state.now = msg.now;
    state.totals = msg.totals;
    state.devices = msg.devices;
    state.status = msg.status;
    if (msg.series) {
      const s = msg.series;
      const from = s.end - s.events.length + 1;
      for (let i = 0; i < s.events.length; i++) {
        state.series.x.push(from + i);
        state.series.events.push(s.events[i]);
        state.series.deadletters.push(s.deadletters[i]);
        state.series.reporting.push(s.reporting[i]);
        state.series.online.push(s.online[i]);
      }
      const keepFrom = s.end - HISTORY_S + 1;
      let drop = 0;
      while (drop < state.series.x.length && state.series.x[drop] < keepFrom) drop++;
      if (drop > 0) for (const k of Object.keys(state.series)) state.series[k].splice(0, drop);
    }
    state.fresh.clear();
    for (const r of msg.readings ?? []) {
      state.readings.delete(r.key);
      state.readings.set(r.key, r);
      if (!msg.full) state.fresh.add(r.key);
    }
    for (const key of msg.removed ?? []) state.readings.delete(key);
    if (msg.alerts) state.alerts = msg.alerts;
    if (msg.deadletters) state.deadletters = msg.deadletters;
    if (msg.tenants) state.tenants = msg.tenants;
    state.updates++;
    scheduleRender();
  }

  // Rendering -----------------------------------------------------------------------------------

  let pending = false;
  function scheduleRender() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      render();
    });
  }

  const fmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const fmtValue = new Intl.NumberFormat(undefined, { maximumSignificantDigits: 4 });

  function text(id, value) {
    const el = $(id);
    if (el.textContent !== value) el.textContent = value;
  }

  function cell(content, className) {
    const td = document.createElement('td');
    if (className) td.className = className;
    if (content instanceof Node) td.append(content);
    else td.textContent = content;
    return td;
  }

  function fillTable(id, rows, columns, empty) {
    const tbody = $(id).tBodies[0];
    const out = rows.map((row) => {
      const tr = document.createElement('tr');
      for (const [value, className] of columns(row)) tr.append(cell(value, className));
      return tr;
    });
    if (out.length === 0) {
      const tr = document.createElement('tr');
      const td = cell(empty, 'empty');
      td.colSpan = $(id).tHead.rows[0].cells.length;
      tr.append(td);
      out.push(tr);
    }
    tbody.replaceChildren(...out);
    return out;
  }

  function age(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min`;
    return `${Math.floor(s / 3600)} h`;
  }

  function clock(iso) {
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? '' : d.toLocaleTimeString();
  }

  function metricsOf(r) {
    const span = document.createElement('span');
    for (const [name, value, unit] of r.metrics) {
      const m = document.createElement('span');
      m.className = 'metric';
      const u = document.createElement('span');
      u.className = 'unit';
      u.textContent = unit === 'count' ? '' : ` ${unit}`;
      m.append(`${name} ${fmtValue.format(value)}`, u);
      span.append(m);
    }
    if (r.more > 0) span.append(`+${r.more} more`);
    return span;
  }

  function last(array) {
    return array.length > 0 ? array[array.length - 1] : undefined;
  }

  function mean(array, n) {
    const tail = array.slice(-n);
    return tail.length === 0 ? 0 : tail.reduce((a, b) => a + b, 0) / tail.length;
  }

  function render() {
    const s = state.series;
    const status = state.status ?? {};
    text('gateway', status.gateway ? `gateway ${status.gateway}` : '');
    const nats = $('nats');
    nats.dataset.state = status.nats ? 'up' : 'down';
    text('nats', status.nats ? 'NATS connected' : 'NATS disconnected');

    text('rate', s.events.length > 0 ? fmt.format(last(s.events)) : '–');
    text('rate-sub', `${fmtValue.format(mean(s.events, 60))}/s over the last minute`);
    const d = state.devices;
    if (d) {
      text('online', d.online === null ? '–' : fmt.format(d.online));
      text(
        'online-sub',
        d.online === null ? 'no presence owner (processors) yet' : 'connected, per presence',
      );
      text('reporting', `${fmt.format(d.reporting)}${d.reportingCapped ? '+' : ''}`);
    }
    text('alerts-firing', fmt.format(state.alerts.firing));
    text(
      'alerts-sub',
      state.totals
        ? `${fmt.format(state.totals.alertsFired)} fired, ${fmt.format(state.totals.alertsResolved)} resolved`
        : '',
    );
    text('deadletters-total', state.totals ? fmt.format(state.totals.deadletters) : '–');
    text('deadletters-sub', `${fmtValue.format(mean(s.deadletters, 60))}/s over the last minute`);

    const filter = $('filter').value.trim().toLowerCase();
    const rows = [];
    const all = [...state.readings.values()];
    for (let i = all.length - 1; i >= 0 && rows.length < READING_ROWS; i--) {
      const r = all[i];
      if (filter && !`${r.deviceId} ${r.tenant} ${r.type ?? ''}`.toLowerCase().includes(filter)) continue;
      rows.push(r);
    }
    text(
      'readings-count',
      `${fmt.format(state.readings.size)} devices${rows.length < state.readings.size ? `, ${rows.length} shown` : ''}`,
    );
    const trs = fillTable(
      'readings',
      rows,
      (r) => [
        [r.deviceId],
        [r.tenant],
        [r.type ?? ''],
        [r.ts ? clock(r.ts) : ''],
        [age(state.now - r.at), 'num'],
        [metricsOf(r)],
      ],
      'no readings yet',
    );
    rows.forEach((r, i) => {
      if (state.fresh.has(r.key)) trs[i].className = 'fresh';
    });

    fillTable(
      'alerts',
      state.alerts.list,
      (a) => [
        [a.severity, `sev-${a.severity}`],
        [a.rule],
        [`${a.tenant}/${a.deviceId}`],
        [fmtValue.format(a.value), 'num'],
        [clock(a.atMs)],
      ],
      'none firing',
    );
    fillTable(
      'deadletters',
      state.deadletters,
      (r) => [
        [r.reason],
        [fmt.format(r.count), 'num'],
        [r.last ? r.last.deviceId : ''],
        [r.last ? r.last.detail : '', 'detail'],
      ],
      'none',
    );
    fillTable(
      'tenants',
      state.tenants,
      (t) => [
        [t.tenant],
        [fmt.format(t.events), 'num'],
        [fmt.format(t.deadletters), 'num'],
        [fmt.format(t.online), 'num'],
        [fmt.format(t.alerts), 'num'],
      ],
      'none yet',
    );

    charts.rate?.setData([s.x, s.events, s.deadletters]);
    charts.devices?.setData([s.x, s.reporting, s.online]);
    document.body.dataset.updates = String(state.updates);
  }

  // Charts --------------------------------------------------------------------------------------

  const charts = {};
  function chart(id, series) {
    const el = $(id);
    const opts = {
      width: el.clientWidth || 600,
      height: 220,
      scales: {
        // At least a minute wide, so that a fresh gateway's few seconds do not get millisecond ticks.
        x: {
          time: true,
          range: (_u, min, max) => {
            const hi = max ?? Date.now() / 1000;
            return [Math.min(min ?? hi, hi - MIN_CHART_SPAN_S), hi];
          },
        },
        y: { range: (_u, _min, max) => [0, Math.max(1, (max ?? 0) * 1.1)] },
      },
      series: [{}, ...series.map((s) => ({ spanGaps: false, width: 2, points: { show: false }, ...s }))],
      axes: [{}, { size: 56 }],
      legend: { live: false },
    };
    return new uPlot(opts, [[], ...series.map(() => [])], el);
  }

  function setupCharts() {
    if (typeof uPlot !== 'function') return;
    charts.rate = chart('chart-rate', [
      { label: 'messages/s', stroke: '#2563eb', fill: 'rgba(37, 99, 235, 0.08)' },
      { label: 'dead letters/s', stroke: '#dc2626' },
    ]);
    charts.devices = chart('chart-devices', [
      { label: 'reporting', stroke: '#0891b2' },
      { label: 'online', stroke: '#16a34a' },
    ]);
    window.addEventListener('resize', () => {
      for (const [name, c] of Object.entries(charts)) {
        const el = $(`chart-${name}`);
        c.setSize({ width: el.clientWidth, height: 220 });
      }
    });
  }

  // Connection ----------------------------------------------------------------------------------

  function setConnection(s, label) {
    const el = $('conn');
    el.dataset.state = s;
    el.textContent = label;
  }

  function showProblem(message) {
    const el = $('problem');
    el.hidden = message === undefined;
    el.textContent = message ?? '';
  }

  // EventSource cannot tell why it was refused: the snapshot route answers the same check with a reason.
  async function explain() {
    try {
      const res = await fetch(`live/snapshot${query}`, { cache: 'no-store' });
      if (!res.ok) showProblem((await res.json()).error ?? `HTTP ${res.status}`);
    } catch {
      showProblem('the gateway does not answer');
    }
  }

  function connect() {
    const events = new EventSource(`live/events${query}`);
    events.onopen = () => {
      setConnection('live', 'live');
      showProblem(undefined);
    };
    events.onmessage = (e) => apply(JSON.parse(e.data));
    events.onerror = () => {
      if (events.readyState === EventSource.CLOSED) {
        setConnection('closed', 'disconnected');
        explain();
        setTimeout(connect, RETRY_CLOSED_MS);
      } else setConnection('reconnecting', 'reconnecting…');
    };
  }

  $('filter').addEventListener('input', scheduleRender);
  setupCharts();
  connect();
  setInterval(scheduleRender, 1000);
})();
