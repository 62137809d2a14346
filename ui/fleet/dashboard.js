// keel-fleetd's read-only dashboard. Every value from the server (and alert
// details come from devices: attacker-controlled) goes into the page through
// textContent or an SVG attribute, never as markup. The token stays in this
// tab's sessionStorage and goes only to this origin.
'use strict';

(() => {
  const TOKEN_KEY = 'keel_fleet_token';
  const REFRESH_MS = 10000;
  const STATES = ['confirmed', 'installed', 'downloading', 'notified', 'postponed', 'failed'];
  const SVG = 'http://www.w3.org/2000/svg';

  const $ = (id) => document.getElementById(id);
  let timer = null;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    return e;
  }
  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }
  const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : 0);
  const fmtTime = (t) => (typeof t === 'number' && t > 0 ? new Date(t * 1000).toISOString().replace('T', ' ').slice(0, 19) : '—');
  function fmtDuration(s) {
    if (typeof s !== 'number' || s < 0) return '—';
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    return d > 0 ? `${d}d ${h}h` : h > 0 ? `${h}h ${m}m` : `${m}m ${Math.floor(s % 60)}s`;
  }

  function notice(text) {
    const n = $('notice');
    n.textContent = text || '';
    n.hidden = !text;
  }

  // ---- the token ------------------------------------------------------------

  function showToken(error) {
    if (timer !== null) clearInterval(timer);
    timer = null;
    $('view-dash').hidden = true;
    $('logout').hidden = true;
    $('view-token').hidden = false;
    const e = $('token-error');
    e.textContent = error || '';
    e.hidden = !error;
    $('token-input').value = '';
    $('token-input').focus();
  }

  class Unauthorized extends Error {}

  async function api(path) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) throw new Unauthorized('no token');
    const r = await fetch('/api/v1/' + path, {
      headers: { Authorization: 'Bearer ' + token, Accept: 'application/json' },
      credentials: 'omit',
      cache: 'no-store',
      redirect: 'error',
    });
    if (r.status === 401) throw new Unauthorized('the token was refused');
    let body = null;
    try {
      body = await r.json();
    } catch {
      body = null;
    }
    if (r.status === 429) throw new Error(`too many failed tokens: wait ${num(body && body.retry_after)} s`);
    if (!r.ok) throw new Error(`${path}: HTTP ${r.status}${body && body.detail ? ': ' + body.detail : ''}`);
    return body;
  }

  // ---- devices ---------------------------------------------------------------

  function renderStates(summary) {
    const dl = $('device-states');
    clear(dl);
    const states = (summary && summary.states) || {};
    const rows = [['devices', num(summary && summary.devices)]];
    for (const k of ['registered', 'active', 'revoked']) rows.push([k, num(states[k])]);
    for (const [k, v] of rows) {
      const dt = el('dt', null, k);
      const dd = el('dd', null, v);
      dd.dataset.testid = `state-${k}`;
      dl.append(dt, dd);
    }
  }

  // A horizontal bar per (model, version), grouped by model, as inline SVG.
  function renderVersions(summary) {
    const box = $('versions');
    clear(box);
    const rows = Array.isArray(summary && summary.versions) ? summary.versions.slice() : [];
    if (rows.length === 0) {
      box.append(el('p', 'hint', 'No device has reported a version yet.'));
      return;
    }
    rows.sort((a, b) => String(a.model).localeCompare(String(b.model)) || String(a.version).localeCompare(String(b.version)));
    const max = Math.max(1, ...rows.map((r) => num(r.devices)));
    const rowH = 22, labelW = 190, barW = 300, width = labelW + barW + 60;
    const s = svg('svg', { viewBox: `0 0 ${width} ${rows.length * rowH + 4}`, role: 'img', 'aria-label': 'devices per model and version' });
    rows.forEach((r, i) => {
      const y = i * rowH + 2;
      const label = svg('text', { x: 0, y: y + 15 });
      label.textContent = `${r.model} ${r.version === '' || r.version == null ? '(none yet)' : r.version}`;
      const w = Math.max(1, Math.round((num(r.devices) / max) * barW));
      const bar = svg('rect', { x: labelW, y: y + 3, width: w, height: rowH - 8, class: 'bar' });
      bar.dataset.testid = 'version-bar';
      bar.dataset.model = String(r.model);
      bar.dataset.version = String(r.version);
      bar.dataset.devices = String(num(r.devices));
      const title = svg('title');
      title.textContent = `${r.model} ${r.version}: ${num(r.devices)} device(s)`;
      bar.append(title);
      const count = svg('text', { x: labelW + w + 6, y: y + 15, class: 'axis' });
      count.textContent = String(num(r.devices));
      s.append(label, bar, count);
    });
    box.append(s);
  }

  function renderIngest(status) {
    const dl = $('ingest');
    clear(dl);
    const ing = status.ingest || {};
    const con = status.consumer;
    const seq = status.sequence || {};
    const rows = [
      ['uptime', fmtDuration(num(status.uptime))],
      ['database', status.database ? `${status.database.driver} (schema ${num(status.database.schema)})` : '—'],
      ['broker', con ? (con.online ? 'online' : 'offline') : 'not configured'],
      ['queue', num(status.queue)],
      ['stored', num(ing.stored)],
      ['duplicates', num(ing.duplicates)],
      ['unknown devices', num(ing.unknown)],
      ['malformed', num(ing.malformed)],
      ['alerts raised', num(ing.alerts)],
      ['messages held', num(seq.messages)],
      ['open gaps', num(seq.open_gaps)],
      ['lost', num(seq.lost)],
      ['last commit', fmtTime(ing.last_commit)],
    ];
    for (const [k, v] of rows) {
      const dd = el('dd', null, v);
      dd.dataset.testid = `ingest-${k.replace(/ /g, '-')}`;
      dl.append(el('dt', null, k), dd);
    }
  }

  // ---- campaigns ---------------------------------------------------------------

  function progressBar(counts) {
    const total = Math.max(1, num(counts.selected));
    const W = 1000;
    const s = svg('svg', { viewBox: `0 0 ${W} 18`, preserveAspectRatio: 'none', class: 'progress', role: 'img' });
    s.append(svg('rect', { x: 0, y: 0, width: W, height: 18, class: 'track' }));
    let x = 0;
    const parts = [];
    for (const st of STATES) {
      const n = num(counts[st]);
      if (n <= 0) continue;
      const w = Math.min(W - x, (n / total) * W);
      const r = svg('rect', { x: x.toFixed(1), y: 0, width: w.toFixed(1), height: 18, class: `s-${st}` });
      r.dataset.state = st;
      r.dataset.count = String(n);
      const t = svg('title');
      t.textContent = `${st}: ${n}`;
      r.append(t);
      s.append(r);
      x += w;
      parts.push(`${st} ${n}`);
    }
    s.setAttribute('aria-label', `${num(counts.selected)} selected: ${parts.join(', ') || 'none started'}`);
    return s;
  }

  function renderCampaigns(list) {
    const box = $('campaigns');
    clear(box);
    $('campaigns-empty').hidden = list.length > 0;
    for (const c of list.slice(0, 20)) {
      const counts = c.counts || {};
      const div = el('div', 'campaign');
      div.dataset.testid = 'campaign';
      div.dataset.id = String(c.id);
      div.dataset.state = String(c.state);
      div.append(el('div', 'title', `${c.model} ${c.version}${c.security ? ' (security)' : ''}: ${c.state}`));
      div.append(el('div', 'meta',
        `${c.percent}% of the model · ${num(counts.selected)} selected · ${num(counts.confirmed)} confirmed · ` +
        `${num(counts.failed)} failed · created ${fmtTime(c.created)} · ${String(c.id).slice(0, 8)}`));
      div.append(progressBar(counts));
      box.append(div);
    }
    const legend = $('legend');
    if (!legend.firstChild) {
      for (const st of STATES) {
        const li = el('li', null);
        li.append(el('span', `swatch s-${st}`), document.createTextNode(st));
        legend.append(li);
      }
    }
  }

  // ---- alerts -------------------------------------------------------------------

  function renderAlerts(list) {
    const body = $('alerts').tBodies[0];
    clear(body);
    $('alerts-empty').hidden = list.length > 0;
    $('alerts').hidden = list.length === 0;
    for (const a of list) {
      const tr = el('tr');
      tr.dataset.testid = 'alert';
      const detail = typeof a.detail === 'string' ? a.detail : JSON.stringify(a.detail);
      tr.append(el('td', null, fmtTime(a.time)), el('td', `sev-${String(a.severity).replace(/[^a-z]/g, '')}`, a.severity),
        el('td', null, a.kind), el('td', null, a.device == null ? '(fleet)' : a.device), el('td', 'detail', detail));
      body.append(tr);
    }
  }

  // ---- the loop -----------------------------------------------------------------

  async function refresh() {
    const dash = $('view-dash');
    try {
      // status first: a refused token costs one failure on the server's count, not three
      const status = await api('status');
      const [campaigns, alerts] = await Promise.all([api('campaigns'), api('alerts?limit=50')]);
      renderStates(status.devices);
      renderVersions(status.devices);
      renderIngest(status);
      renderCampaigns(Array.isArray(campaigns.campaigns) ? campaigns.campaigns : []);
      renderAlerts(Array.isArray(alerts.alerts) ? alerts.alerts : []);
      $('updated').textContent = `updated ${fmtTime(num(status.time))} UTC`;
      notice('');
      $('view-token').hidden = true;
      $('logout').hidden = false;
      dash.hidden = false;
      dash.setAttribute('aria-busy', 'false');
    } catch (e) {
      if (e instanceof Unauthorized) {
        sessionStorage.removeItem(TOKEN_KEY);
        showToken(sessionStorage.getItem('keel_fleet_tried') ? 'The token was refused.' : '');
        return;
      }
      notice(`Cannot refresh: ${e.message}`);
    }
  }

  function start() {
    if (timer !== null) clearInterval(timer);
    timer = setInterval(refresh, REFRESH_MS);
    return refresh();
  }

  $('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = $('token-input').value.trim();
    $('token-input').value = '';
    if (!t) return;
    sessionStorage.setItem(TOKEN_KEY, t);
    sessionStorage.setItem('keel_fleet_tried', '1');
    start();
  });
  $('logout').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem('keel_fleet_tried');
    showToken('');
  });

  if (sessionStorage.getItem(TOKEN_KEY)) start();
  else showToken('');
})();
