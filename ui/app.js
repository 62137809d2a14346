// keeld's setup UI: one page, talking to the device's JSON API (docs/api.md).
//
// The session lives in the keel_session cookie (HttpOnly, set by keeld); the
// script never sees it. The CSRF token from the login answer is kept in
// sessionStorage (gone when the tab closes) and sent as X-CSRF-Token on every
// request that changes something. The bearer token in the login answer is
// ignored on purpose: nothing a script can read should log in.
//
// Served under a strict CSP: no inline script or style, nothing from elsewhere.
// Views and pages are shown and hidden with the `hidden` attribute only.
'use strict';

(function () {
  const API = '/api/v1';
  const CSRF_KEY = 'keel_csrf';
  const USER_KEY = 'keel_user';
  const PAGES = ['device', 'updates', 'security', 'privacy', 'reset'];
  const POLL_MS = 1500;
  const UPLOAD_PIECE = 65536; // the device's cap on one request body (docs/api.md)

  const state = {
    status: null,
    device: null,
    settings: null,
    update: null,
    consent: null,
    // The label password, held in memory only between the login and the
    // forced change, so the owner does not have to type it twice.
    labelPassword: null,
    // True while the label password is in force: the change is the first
    // run's, and the secure-setup guide follows it.
    forced: false,
    page: 'device',
    pollTimer: null,
  };

  const $ = (id) => document.getElementById(id);

  function showMsg(id, text) {
    const el = $(id);
    el.textContent = text || '';
    el.hidden = !text;
  }

  function setText(id, text) {
    $(id).textContent = text === null || text === undefined || text === '' ? '—' : String(text);
  }

  function plural(n, one, many) {
    return n === 1 ? one : many;
  }

  // ---- the API ----------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body, retryAfter) {
      super((body && body.error) || 'http_' + status);
      this.status = status;
      this.body = body || {};
      this.code = this.body.error || '';
      this.retryAfter = retryAfter;
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    let payload;
    if (body instanceof Blob) {
      headers['Content-Type'] = 'application/octet-stream';
      payload = body;
    } else if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      payload = JSON.stringify(body);
    }
    if (method !== 'GET' && method !== 'HEAD') {
      const csrf = sessionStorage.getItem(CSRF_KEY);
      if (csrf) headers['X-CSRF-Token'] = csrf;
    }
    let res;
    try {
      res = await fetch(API + path, {
        method,
        headers,
        body: payload,
        credentials: 'same-origin',
        cache: 'no-store',
        redirect: 'error',
      });
    } catch (e) {
      throw new ApiError(0, { error: 'network' });
    }
    let data = null;
    if (res.status !== 204) {
      const text = await res.text();
      if (text) {
        try {
          data = JSON.parse(text);
        } catch (e) {
          data = null;
        }
      }
    }
    if (!res.ok) {
      let retry = data && Number.isFinite(data.retry_after) ? data.retry_after : NaN;
      if (!Number.isFinite(retry)) retry = parseInt(res.headers.get('Retry-After') || '', 10);
      throw new ApiError(res.status, data, Number.isFinite(retry) ? retry : null);
    }
    return data;
  }

  function tooMany(e) {
    if (e.retryAfter === null || e.retryAfter === undefined) return 'Too many attempts. Wait a little and try again.';
    const n = Math.max(1, Math.ceil(e.retryAfter));
    return 'Too many attempts. Wait ' + n + ' ' + plural(n, 'second', 'seconds') + ' and try again.';
  }

  function generic(e) {
    if (e.status === 0) return 'The device does not answer. Check its network connection and try again.';
    if (e.body && e.body.message) return e.body.message;
    if (e.status === 413) return 'That is too large for the device.';
    return 'The device could not do this (error ' + e.status + (e.code ? ', ' + e.code : '') + ').';
  }

  // A 401 or 403 on a route that needs a session: the session is gone (or
  // limited to the password change). Returns true when it handled the error.
  function sessionProblem(e) {
    if (!(e instanceof ApiError)) return false;
    if (e.status === 401 || (e.status === 403 && e.code === 'csrf_failed')) {
      sessionEnded('Your session has ended. Please log in again.');
      return true;
    }
    if (e.status === 403 && e.code === 'password_change_required') {
      showPasswordView(true);
      return true;
    }
    return false;
  }

  // Whether this tab still has a session (403 password_change_required is one).
  async function sessionAlive() {
    try {
      await api('GET', '/settings');
      return true;
    } catch (e) {
      return e.status !== 401;
    }
  }

  async function login(username, password) {
    const r = await api('POST', '/session', { username, password });
    sessionStorage.setItem(CSRF_KEY, r.csrf);
    sessionStorage.setItem(USER_KEY, username);
    return r;
  }

  function forgetSession() {
    sessionStorage.removeItem(CSRF_KEY);
    state.labelPassword = null;
    state.device = state.settings = state.update = null;
    stopPolling();
  }

  // ---- views --------------------------------------------------------------

  function showView(name) {
    for (const v of document.querySelectorAll('.view')) v.hidden = v.id !== 'view-' + name;
    const inSession = name === 'password' || name === 'guide' || name === 'dashboard';
    $('logout').hidden = !inSession;
    document.body.dataset.view = name;
  }

  function notice(text) {
    showMsg('notice', text);
  }

  async function refreshStatus() {
    try {
      state.status = await api('GET', '/status');
      $('topbar-model').textContent = state.status.model || '';
    } catch (e) {
      state.status = null;
    }
    return state.status;
  }

  function showLogin(message) {
    stopPolling();
    notice(message || '');
    showMsg('login-error', '');
    $('login-first-run').hidden = !(state.status && state.status.setup_required);
    $('login-password').value = '';
    $('login-submit').disabled = false;
    showView('login');
    const user = $('login-username');
    (user.value ? $('login-password') : user).focus();
  }

  function sessionEnded(message) {
    forgetSession();
    refreshStatus().finally(() => showLogin(message));
  }

  function showPasswordView(forced) {
    stopPolling();
    state.forced = forced;
    $('cp-forced-intro').hidden = !forced;
    $('cp-current-row').hidden = forced && state.labelPassword !== null;
    $('cp-cancel').hidden = forced;
    for (const id of ['cp-current', 'cp-new', 'cp-confirm']) $(id).value = '';
    showMsg('cp-error', '');
    delete $('cp-error').dataset.reason;
    $('cp-submit').disabled = false;
    showView('password');
    ($('cp-current-row').hidden ? $('cp-new') : $('cp-current')).focus();
  }

  async function showGuide() {
    showView('guide');
    try {
      state.device = await api('GET', '/device');
      $('guide-fingerprint').textContent = state.device.certificate_sha256 || '';
      if (state.device.support_until) $('guide-support').textContent = state.device.support_until;
    } catch (e) {
      if (!sessionProblem(e)) notice(generic(e));
    }
    $('guide-done').focus();
  }

  async function enterDashboard(page) {
    try {
      state.device = await api('GET', '/device');
    } catch (e) {
      if (e.status === 0) showView('offline');
      else if (!sessionProblem(e)) notice(generic(e));
      return;
    }
    showView('dashboard');
    renderDevice();
    const fromHash = location.hash.replace(/^#/, '');
    await route(page || (PAGES.includes(fromHash) ? fromHash : 'device'));
  }

  async function route(page) {
    if (!PAGES.includes(page)) page = 'device';
    state.page = page;
    if (location.hash !== '#' + page) history.replaceState(null, '', '#' + page);
    for (const p of PAGES) {
      $('page-' + p).hidden = p !== page;
      const tab = $('tab-' + p);
      if (p === page) tab.setAttribute('aria-current', 'page');
      else tab.removeAttribute('aria-current');
    }
    stopPolling();
    const el = $('page-' + page);
    el.setAttribute('aria-busy', 'true');
    try {
      if (page === 'device') await loadDevicePage();
      else if (page === 'updates') await loadUpdatesPage();
      else if (page === 'security') await loadSecurityPage();
      else if (page === 'privacy') await loadPrivacyPage();
      else if (page === 'reset') await loadResetPage();
    } catch (e) {
      if (!sessionProblem(e)) notice(generic(e));
    } finally {
      el.setAttribute('aria-busy', 'false');
    }
  }

  // ---- device -------------------------------------------------------------

  function renderDevice() {
    const d = state.device;
    if (!d) return;
    $('topbar-model').textContent = d.model || '';
    setText('device-model', d.model);
    setText('device-id', d.id);
    setText('device-serial', d.serial);
    setText('device-firmware', d.firmware_version === null ? 'not installed through an update yet' : d.firmware_version);
    setText('device-security-version', d.security_version);
    setText('device-support-until', d.support_until === null ? 'not known yet' : d.support_until);
    const pill = $('device-support-status');
    if (d.support_expired) {
      pill.textContent = 'Support period is over: no more security updates';
      pill.className = 'pill bad';
    } else if (d.support_until) {
      pill.textContent = 'Supported';
      pill.className = 'pill good';
    } else {
      pill.textContent = '';
      pill.className = 'pill';
    }
    pill.dataset.expired = String(!!d.support_expired);
    setText('device-fingerprint', d.certificate_sha256);
    const tamper = d.tamper_alert || (state.update && state.update.tamper_alert);
    showMsg('tamper-banner', tamper ? tamperText(tamper) : '');
  }

  function tamperText(t) {
    let s = 'Tamper alert: the firmware in slot ' + (t.slot || '?') + ' was changed and is not used.';
    if (t.detail) s += ' ' + t.detail;
    if (t.time) s += ' (' + new Date(t.time * 1000).toLocaleString() + ')';
    return s;
  }

  async function loadDevicePage() {
    state.device = await api('GET', '/device');
    renderDevice();
    state.update = await api('GET', '/update');
    renderTopBanner();
    renderLink(await api('GET', '/link'));
  }

  const LINK_TEXT = {
    online: 'Connected',
    connecting: 'Connecting…',
    offline: 'Not connected: the device tries again by itself',
    stopped: 'Stopped',
  };

  function renderLink(l) {
    const el = $('link-state');
    if (!l.configured || !l.link) {
      el.textContent = 'No cloud service is configured: the device works on its own';
      el.dataset.state = 'none';
    } else {
      let t = LINK_TEXT[l.link.state] || l.link.state;
      if (l.link.state === 'offline' && l.link.next_attempt_in > 0) t += ' (next try in ' + Math.ceil(l.link.next_attempt_in) + ' s)';
      el.textContent = t;
      el.dataset.state = l.link.state;
    }
    const o = l.outbox;
    setText('outbox-pending', o ? o.pending + ' (' + bytes(o.pending_bytes) + ')' : null);
    setText('outbox-acked', o ? o.acked : null);
    setText('outbox-dropped', o ? o.dropped.telemetry + o.dropped.event + o.dropped.alert : null);
    $('outbox-pending').dataset.pending = o ? String(o.pending) : '';
  }

  function renderTopBanner() {
    const u = state.update;
    const required = !!(u && u.staged && u.staged.security_update_required);
    $('security-banner-top').hidden = !required || state.page === 'updates';
    if (u && u.tamper_alert && !(state.device && state.device.tamper_alert)) {
      showMsg('tamper-banner', tamperText(u.tamper_alert));
    }
  }

  // ---- updates ------------------------------------------------------------

  function listText(v) {
    if (v === null || v === undefined || v === '') return null;
    if (Array.isArray(v)) return v.length ? v.join(', ') : null;
    return String(v);
  }

  function bytes(n) {
    if (typeof n !== 'number') return null;
    if (n >= 1048576) return (n / 1048576).toFixed(1) + ' MiB';
    if (n >= 1024) return (n / 1024).toFixed(1) + ' KiB';
    return n + ' bytes';
  }

  const STATE_TEXT = {
    idle: 'Up to date with what the device has received',
    uploading: 'An update is being uploaded',
    staged: 'An update is ready to install',
    installing: 'Installing an update…',
    installed: 'Update installed: restart the device to run it',
  };

  function renderUpdate() {
    const u = state.update;
    if (!u) return;
    const el = $('update-state');
    el.textContent = STATE_TEXT[u.state] || u.state;
    el.dataset.state = u.state;
    const r = u.running;
    setText('update-running', r ? 'version ' + r.version + ' (security version ' + r.security_version + ') in slot ' + r.slot : 'no firmware installed through an update yet');
    setText('update-counter', u.counter);
    // pending: the slot that runs after a restart ({slot, version, ...}, or its name).
    const p = u.pending;
    const pendingText = p && typeof p === 'object'
      ? 'Version ' + p.version + ' is installed in slot ' + p.slot + '.'
      : 'The update is installed in slot ' + p + '.';
    showMsg('update-pending', u.state === 'installed' && p ? pendingText + ' Restart the device to run it.' : '');
    const lastErr = u.last_error && (typeof u.last_error === 'string' ? u.last_error : (u.last_error.message || JSON.stringify(u.last_error)));
    showMsg('update-last-error', lastErr && u.state !== 'installed' ? 'The last update attempt failed: ' + lastErr : '');

    const s = u.staged;
    $('update-staged').hidden = !s;
    $('update-banner').hidden = !(s && s.security_update_required);
    if (s) {
      setText('staged-version', s.version);
      setText('staged-security-version', s.security_version);
      setText('staged-support', s.support_until);
      setText('staged-fixes', listText(s.security_fixes) || 'none listed');
      setText('staged-notes', listText(s.notes));
      setText('staged-risk', listText(s.risk !== undefined ? s.risk : s.risks));
      setText('staged-disruptive', s.disruptive
        ? 'Yes: the device is unavailable for about ' + (s.downtime_seconds || 0) + ' ' + plural(s.downtime_seconds, 'second', 'seconds') + ' while it restarts'
        : 'No');
      $('staged-disruptive').dataset.disruptive = String(!!s.disruptive);
      setText('staged-size', bytes(s.size));
    }
    $('update-apply').disabled = u.state !== 'staged';
    $('bundle-upload').disabled = u.state === 'installing';
    renderTopBanner();
  }

  function renderSettings() {
    const s = state.settings;
    if (!s) return;
    $('set-automatic').checked = !!s.automatic_updates;
    $('set-notifications').checked = !!s.notifications;
    $('set-postpone').value = s.postpone_until || '';
    $('settings-warning').hidden = !!s.automatic_updates;
  }

  async function loadUpdatesPage() {
    showMsg('settings-status', '');
    showMsg('settings-error', '');
    const [u, s] = await Promise.all([api('GET', '/update'), api('GET', '/settings')]);
    state.update = u;
    state.settings = s;
    renderUpdate();
    renderSettings();
    if (u.state === 'installing') startPolling();
  }

  function startPolling() {
    stopPolling();
    state.pollTimer = setTimeout(async () => {
      state.pollTimer = null;
      try {
        state.update = await api('GET', '/update');
      } catch (e) {
        if (!sessionProblem(e)) showMsg('update-apply-error', generic(e));
        return;
      }
      renderUpdate();
      if (state.update.state === 'installing') {
        startPolling();
      } else {
        showMsg('update-apply-status', '');
      }
    }, POLL_MS);
  }

  function stopPolling() {
    if (state.pollTimer) clearTimeout(state.pollTimer);
    state.pollTimer = null;
  }

  async function onSettingsSave(ev) {
    ev.preventDefault();
    showMsg('settings-status', '');
    showMsg('settings-error', '');
    const body = {
      automatic_updates: $('set-automatic').checked,
      notifications: $('set-notifications').checked,
      postpone_until: $('set-postpone').value || null,
    };
    $('settings-save').disabled = true;
    try {
      state.settings = await api('PUT', '/settings', body);
      renderSettings();
      showMsg('settings-status', 'Settings saved.');
    } catch (e) {
      if (!sessionProblem(e)) showMsg('settings-error', e.status === 400 ? 'The device refused these settings. Check the date.' : generic(e));
    } finally {
      $('settings-save').disabled = false;
    }
  }

  // The device takes a bundle in pieces of at most UPLOAD_PIECE bytes
  // (PUT /update/bundle?offset=N), then checks it (POST /update/stage).
  async function uploadBundle(file) {
    let offset = 0;
    let resumes = 0;
    do {
      const piece = file.slice(offset, Math.min(offset + UPLOAD_PIECE, file.size));
      let r;
      try {
        r = await api('PUT', '/update/bundle?offset=' + offset, piece);
      } catch (e) {
        // 409 names where the device is: resume from there, a few times.
        if (e.status === 409 && Number.isFinite(e.body.received) && offset > 0 && resumes < 3) {
          resumes += 1;
          offset = e.body.received;
          continue;
        }
        throw e;
      }
      offset = Number.isFinite(r && r.received) ? r.received : offset + piece.size;
      const pct = file.size ? Math.floor((100 * offset) / file.size) : 100;
      showMsg('bundle-status', 'Uploading ' + file.name + ': ' + pct + ' %');
    } while (offset < file.size);
    showMsg('bundle-status', 'Checking the signature of ' + file.name + '…');
    const r = await api('POST', '/update/stage', {});
    return (r && r.staged) || r;
  }

  async function onBundleUpload(ev) {
    ev.preventDefault();
    showMsg('bundle-error', '');
    showMsg('bundle-status', '');
    const file = $('bundle-file').files[0];
    if (!file) {
      showMsg('bundle-error', 'Choose an update file first.');
      return;
    }
    $('bundle-upload').disabled = true;
    $('bundle-file').disabled = true;
    try {
      const staged = await uploadBundle(file);
      $('bundle-file').value = '';
      showMsg('bundle-status', 'The update ' + ((staged && staged.version) || '') + ' passed the signature check and is ready to install.');
    } catch (e) {
      showMsg('bundle-status', '');
      if (sessionProblem(e)) return;
      if (e.status === 422) showMsg('bundle-error', 'The device refused this file: ' + (e.body.message || 'it is not a valid update for this device.'));
      else if (e.status === 409) showMsg('bundle-error', 'An update is being installed, or the upload was interrupted. Try again when the installation has finished.');
      else if (e.status === 413) showMsg('bundle-error', 'The file is too large for this device.');
      else showMsg('bundle-error', generic(e));
    } finally {
      $('bundle-file').disabled = false;
      try {
        state.update = await api('GET', '/update');
        renderUpdate();
      } catch (e) {
        sessionProblem(e);
      }
      $('bundle-upload').disabled = !!(state.update && state.update.state === 'installing');
    }
  }

  async function onApply() {
    showMsg('update-apply-status', '');
    showMsg('update-apply-error', '');
    showMsg('bundle-status', '');
    $('update-apply').disabled = true;
    try {
      await api('POST', '/update/apply', {});
      showMsg('update-apply-status', 'Installing the update. The device checks every part again while it writes it…');
      state.update = await api('GET', '/update');
      renderUpdate();
      if (state.update.state === 'installing') startPolling();
      else showMsg('update-apply-status', '');
    } catch (e) {
      if (sessionProblem(e)) return;
      if (e.status === 409) {
        showMsg('update-apply-error', 'The update cannot be installed now' + (e.body.message ? ': ' + e.body.message + '.' : '.'));
      } else {
        showMsg('update-apply-error', generic(e));
      }
      try {
        state.update = await api('GET', '/update');
        renderUpdate();
      } catch (e2) {
        sessionProblem(e2);
      }
    }
  }

  // ---- security check -------------------------------------------------------

  function verdict(id, pass, detail) {
    const li = $(id);
    li.dataset.verdict = pass ? 'pass' : 'fail';
    li.className = pass ? 'pass' : 'fail';
    li.querySelector('.verdict').textContent = pass ? 'PASS' : 'FAIL';
    li.querySelector('.detail').textContent = detail;
    return pass;
  }

  async function loadSecurityPage() {
    for (const li of document.querySelectorAll('#security-checks li')) {
      delete li.dataset.verdict;
      li.className = '';
      li.querySelector('.verdict').textContent = '…';
      li.querySelector('.detail').textContent = '';
    }
    setText('security-summary', 'Checking…');
    const [status, settings, update, device] = await Promise.all([
      api('GET', '/status'), api('GET', '/settings'), api('GET', '/update'), api('GET', '/device'),
    ]);
    Object.assign(state, { status, settings, update, device });
    renderDevice();
    renderTopBanner();

    const results = [];
    results.push(verdict('check-password', status.setup_required === false,
      status.setup_required === false ? 'The label password no longer logs in.'
        : 'The label password is still in force: choose your own under Device.'));

    let autoDetail = settings.automatic_updates ? 'Security fixes are installed without waiting for you.'
      : 'Turn them on under Updates, or the device gets security fixes only when you install them.';
    if (settings.automatic_updates && settings.postpone_until) autoDetail += ' Postponed until ' + settings.postpone_until + '.';
    results.push(verdict('check-auto-updates', !!settings.automatic_updates, autoDetail));

    const problems = [];
    const tamper = device.tamper_alert || update.tamper_alert;
    if (tamper) problems.push(tamperText(tamper));
    if (update.staged && update.staged.security_update_required) problems.push('A security update (' + update.staged.version + ') waits to be installed under Updates.');
    if (update.state === 'installed') problems.push('An installed update waits for a restart of the device.');
    const running = update.running ? 'Version ' + update.running.version + ' runs.' : 'No firmware installed through an update yet.';
    results.push(verdict('check-firmware', problems.length === 0, problems.length ? problems.join(' ') : running));

    results.push(verdict('check-support', device.support_expired !== true,
      device.support_expired === true ? 'The support period ended on ' + device.support_until + ': the device gets no more security updates. Plan to replace it.'
        : device.support_until ? 'Security updates until ' + device.support_until + '.' : 'The end of the support period is not known yet.'));

    const failed = results.filter((r) => !r).length;
    const summary = $('security-summary');
    summary.textContent = failed === 0 ? 'All ' + results.length + ' checks pass.'
      : failed + ' of ' + results.length + ' ' + plural(results.length, 'check fails', 'checks fail') + '.';
    summary.dataset.failed = String(failed);
  }

  // ---- privacy -----------------------------------------------------------------

  const BASIS_TEXT = {
    consent: 'your consent',
    contract: 'needed to provide the service you bought',
    'legal-obligation': 'required by law',
    'vital-interests': 'to protect someone\'s life',
    'public-task': 'a task in the public interest',
    'legitimate-interests': 'the manufacturer\'s legitimate interests',
  };
  const TYPE_TEXT = { number: 'a number', integer: 'a whole number', boolean: 'yes or no', string: 'text' };

  function when(t) {
    return t ? new Date(t * 1000).toLocaleString() : null;
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }

  function fact(dl, term, value) {
    dl.append(el('dt', null, term), el('dd', null, value === null || value === undefined || value === '' ? '—' : value));
  }

  function renderPrivacy(p) {
    $('privacy-none').hidden = !!p.declared;
    $('privacy-declared').hidden = !p.declared;
    if (!p.declared) return;
    $('privacy-product').textContent = p.product;
    $('privacy-controller').textContent = p.controller.name + ' (' + p.controller.contact + ')';
    const sensing = $('privacy-sensing');
    sensing.replaceChildren();
    for (const s of p.sensing) {
      sensing.append(el('li', null, s.description + (s.personal ? ' This can be personal data.' : '')));
    }
    const cats = $('privacy-categories');
    cats.replaceChildren();
    for (const c of p.categories) {
      const box = el('section', 'category');
      box.id = 'category-' + c.id;
      box.dataset.testid = 'category-' + c.id;
      box.append(el('h3', null, c.description));
      const dl = el('dl', 'facts');
      fact(dl, 'Why', c.purpose);
      fact(dl, 'Personal data', c.personal ? (c.sensitive ? 'Yes, of a sensitive kind' : 'Yes') : 'No');
      fact(dl, 'Who receives it', c.recipients.length ? c.recipients.join(', ') : 'Nobody: it stays on the device');
      fact(dl, 'Kept for', c.retention_days + ' ' + plural(c.retention_days, 'day', 'days') + ', then deleted');
      fact(dl, 'Legal basis', BASIS_TEXT[c.legal_basis] || c.legal_basis);
      fact(dl, 'Sent values', c.telemetry_fields.length ? c.telemetry_fields.join(', ') : 'none');
      box.append(dl);
      cats.append(box);
    }
    const tb = $('privacy-telemetry');
    tb.replaceChildren();
    for (const f of p.telemetry) {
      const tr = el('tr');
      tr.dataset.field = f.field;
      tr.append(el('td', 'mono', f.field), el('td', null, TYPE_TEXT[f.type] || f.type), el('td', null, f.why));
      tb.append(tr);
    }
    renderConsent(p.consent);
  }

  function renderConsent(c) {
    state.consent = c;
    const list = $('consent-list');
    list.replaceChildren();
    if (!c.purposes.length) list.append(el('p', null, 'Nothing this device does needs your consent.'));
    for (const pur of c.purposes) {
      const row = el('div', 'consent');
      row.id = 'consent-' + pur.purpose;
      row.dataset.testid = 'consent-' + pur.purpose;
      row.dataset.given = String(!!pur.current);
      const text = el('p', null);
      text.append(el('strong', null, pur.description), el('br'), document.createTextNode('Consent: '));
      let status;
      if (pur.current) status = 'given (version ' + pur.version + ', ' + when(pur.time) + ')';
      else if (pur.given) status = 'given for an older text (version ' + pur.version + '): please decide again';
      else if (pur.time) status = 'withdrawn (' + when(pur.time) + ')';
      else status = 'not given';
      text.append(document.createTextNode(status));
      const btn = el('button', pur.current ? 'secondary' : null, pur.current ? 'Withdraw consent' : 'Give consent');
      btn.type = 'button';
      btn.id = 'consent-toggle-' + pur.purpose;
      btn.dataset.testid = 'consent-toggle-' + pur.purpose;
      btn.addEventListener('click', guard(() => setConsent(pur.purpose, !pur.current, btn)));
      row.append(text, btn);
      list.append(row);
    }
    const log = $('consent-log');
    log.replaceChildren();
    if (!c.log.length) log.append(el('li', null, 'No consent given or withdrawn yet.'));
    for (const e of c.log) {
      const li = el('li', null, when(e.time) + ': ' + e.purpose + ' ' + (e.given ? 'given' : 'withdrawn') +
        ' (version ' + e.version + ', from the ' + (e.via === 'ui' ? 'web page' : e.via === 'app' ? 'product app' : 'API') + ')');
      li.dataset.given = String(!!e.given);
      log.append(li);
    }
  }

  async function setConsent(purpose, given, btn) {
    showMsg('consent-error', '');
    btn.disabled = true;
    try {
      renderConsent(await api('PUT', '/privacy/consent', { purpose, given, version: state.consent.consent_version }));
    } catch (e) {
      if (sessionProblem(e)) return;
      if (e.status === 409) {
        showMsg('consent-error', 'The privacy information changed. Read it again and decide.');
        await loadPrivacyPage();
      } else {
        showMsg('consent-error', generic(e));
      }
    } finally {
      btn.disabled = false;
    }
  }

  async function loadPrivacyPage() {
    showMsg('consent-error', '');
    showMsg('export-error', '');
    renderPrivacy(await api('GET', '/privacy'));
  }

  // The export is a download: fetched with the session cookie, handed to
  // the browser as a file.
  async function onExport() {
    showMsg('export-error', '');
    $('privacy-export').disabled = true;
    try {
      const res = await fetch(API + '/privacy/export', { credentials: 'same-origin', cache: 'no-store', redirect: 'error' });
      if (!res.ok) {
        let body = null;
        try {
          body = await res.json();
        } catch (e) {
          body = null;
        }
        throw new ApiError(res.status, body, null);
      }
      const blob = await res.blob();
      const disp = res.headers.get('Content-Disposition') || '';
      const m = /filename="([^"]+)"/.exec(disp);
      const a = document.createElement('a');
      a.href = URL.createObjectURL(blob);
      a.download = m ? m[1] : 'device-data.json';
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    } catch (e) {
      if (!sessionProblem(e)) showMsg('export-error', generic(e));
    } finally {
      $('privacy-export').disabled = false;
    }
  }

  // ---- factory reset ---------------------------------------------------------

  async function loadResetPage() {
    $('reset-password').value = '';
    $('reset-confirm').checked = false;
    showMsg('reset-error', '');
    const r = await api('GET', '/privacy/erase');
    const list = $('erase-list');
    list.replaceChildren();
    $('erase-none').hidden = r.requests.length > 0;
    for (const q of r.requests) {
      let status;
      if (q.confirmed) status = 'confirmed by the cloud on ' + when(q.confirmed);
      else if (q.receipt && q.receipt.erased === false) status = 'refused by the cloud' + (q.receipt.reason ? ': ' + q.receipt.reason : '');
      else status = 'waiting for the cloud to confirm';
      const li = el('li', null, 'Requested ' + when(q.requested) + ': ' + status + ' (request ' + q.id + ')');
      li.dataset.status = q.confirmed ? 'confirmed' : 'pending';
      li.dataset.id = q.id;
      list.append(li);
    }
  }

  async function onReset(ev) {
    ev.preventDefault();
    showMsg('reset-error', '');
    const password = $('reset-password').value;
    if (!password) {
      showMsg('reset-error', 'Enter your password to confirm the reset.');
      return;
    }
    if (!$('reset-confirm').checked) {
      showMsg('reset-error', 'Tick the box to confirm that you want to erase everything.');
      return;
    }
    $('reset-submit').disabled = true;
    try {
      const r = await api('POST', '/factory-reset', { password });
      $('reset-password').value = '';
      forgetSession();
      await refreshStatus();
      let msg = 'The device was reset. To set it up again, log in with the password printed on its label.';
      if (r && r.receipt && r.receipt.cloud && r.receipt.cloud.request) {
        msg += ' The device asked the cloud to erase your data (request ' + r.receipt.cloud.request +
          '); its confirmation appears under Factory reset once you are logged in again.';
      }
      showLogin(msg);
    } catch (e) {
      $('reset-password').value = '';
      if (e.status === 401 && !(await sessionAlive())) return sessionEnded('Your session has ended. Please log in again.');
      if (e.status === 401) showMsg('reset-error', 'The password is wrong.');
      else if (e.status === 429) showMsg('reset-error', tooMany(e));
      else if (!sessionProblem(e)) showMsg('reset-error', generic(e));
    } finally {
      $('reset-submit').disabled = false;
    }
  }

  // ---- login and password ---------------------------------------------------

  async function onLogin(ev) {
    ev.preventDefault();
    notice('');
    showMsg('login-error', '');
    const username = $('login-username').value.trim();
    const password = $('login-password').value;
    if (!username || !password) {
      showMsg('login-error', 'Enter the user name and the password.');
      return;
    }
    $('login-submit').disabled = true;
    try {
      const r = await login(username, password);
      $('login-password').value = '';
      if (r.must_change_password) {
        state.labelPassword = password;
        showPasswordView(true);
      } else {
        await enterDashboard();
      }
    } catch (e) {
      $('login-password').value = '';
      if (e.status === 401 || e.status === 400) showMsg('login-error', 'The user name or password is wrong.');
      else if (e.status === 429) showMsg('login-error', tooMany(e));
      else showMsg('login-error', generic(e));
      $('login-password').focus();
    } finally {
      $('login-submit').disabled = false;
    }
  }

  async function onPasswordChange(ev) {
    ev.preventDefault();
    showMsg('cp-error', '');
    delete $('cp-error').dataset.reason;
    const current = $('cp-current-row').hidden ? state.labelPassword : $('cp-current').value;
    const next = $('cp-new').value;
    if (!current) return showMsg('cp-error', 'Enter your current password.');
    if (!next) return showMsg('cp-error', 'Enter a new password.');
    if (next !== $('cp-confirm').value) return showMsg('cp-error', 'The two new passwords are not the same.');
    $('cp-submit').disabled = true;
    try {
      await api('POST', '/password', { current, new: next });
    } catch (e) {
      $('cp-submit').disabled = false;
      if (e.status === 422) {
        $('cp-error').dataset.reason = e.body.reason || '';
        showMsg('cp-error', e.body.message || 'The device does not accept this password. Choose another one.');
        $('cp-new').focus();
      } else if (e.status === 401) {
        if (!$('cp-current-row').hidden && (await sessionAlive())) showMsg('cp-error', 'The current password is wrong.');
        else sessionEnded('Your session has ended. Please log in again.');
      } else if (e.status === 429) {
        showMsg('cp-error', tooMany(e));
      } else if (!sessionProblem(e)) {
        showMsg('cp-error', generic(e));
      }
      return;
    }
    // Every session has ended: log in again with the new password.
    for (const id of ['cp-current', 'cp-new', 'cp-confirm']) $(id).value = '';
    const user = sessionStorage.getItem(USER_KEY) || 'admin';
    const firstRun = state.forced;
    forgetSession();
    await refreshStatus();
    try {
      await login(user, next);
    } catch (e) {
      showLogin('Your new password is set. Log in with it.');
      return;
    }
    $('cp-submit').disabled = false;
    if (firstRun) {
      await showGuide();
    } else {
      notice('Your new password is set.');
      await enterDashboard('device');
    }
  }

  async function onLogout() {
    try {
      await api('DELETE', '/session');
    } catch (e) {
      // The session may be gone already; the outcome is the same.
    }
    forgetSession();
    await refreshStatus();
    showLogin('You are logged out.');
  }

  // ---- start ----------------------------------------------------------------

  async function start() {
    showView('loading');
    if (!(await refreshStatus())) {
      showView('offline');
      return;
    }
    if (!sessionStorage.getItem(CSRF_KEY)) {
      showLogin();
      return;
    }
    await enterDashboard();
  }

  function guard(fn) {
    return (ev) => {
      Promise.resolve(fn(ev)).catch((e) => {
        if (!sessionProblem(e)) notice(e instanceof ApiError ? generic(e) : 'Something went wrong. Reload the page.');
      });
    };
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('login-form').addEventListener('submit', guard(onLogin));
    $('password-form').addEventListener('submit', guard(onPasswordChange));
    $('cp-cancel').addEventListener('click', guard(() => enterDashboard('device')));
    $('guide-done').addEventListener('click', guard(() => {
      notice('');
      return enterDashboard('device');
    }));
    $('logout').addEventListener('click', guard(onLogout));
    $('offline-retry').addEventListener('click', guard(start));
    $('change-password').addEventListener('click', () => {
      notice('');
      showPasswordView(false);
    });
    $('settings-form').addEventListener('submit', guard(onSettingsSave));
    $('set-automatic').addEventListener('change', () => {
      $('settings-warning').hidden = $('set-automatic').checked;
    });
    $('set-postpone-clear').addEventListener('click', () => {
      $('set-postpone').value = '';
    });
    $('bundle-form').addEventListener('submit', guard(onBundleUpload));
    $('update-apply').addEventListener('click', guard(onApply));
    $('security-refresh').addEventListener('click', guard(loadSecurityPage));
    $('reset-form').addEventListener('submit', guard(onReset));
    $('privacy-export').addEventListener('click', guard(onExport));
    window.addEventListener('hashchange', guard(() => {
      if (document.body.dataset.view !== 'dashboard') return;
      const page = location.hash.replace(/^#/, '');
      notice('');
      if (page !== state.page) return route(page);
    }));
    guard(start)();
  });
})();
