// Warren management UI: a single page over the RabbitMQ-compatible HTTP API.
// Vanilla JS, no dependencies. Routes are in the URL hash (#/queues/%2F/q1);
// `?poll=1000` in the page URL sets the refresh interval in ms (default 5000).
'use strict';
(function () {
  var POLL = Math.max(500, parseInt(new URLSearchParams(location.search).get('poll'), 10) || 5000);
  var MAX_SAMPLES = 60;
  var AUTH_KEY = 'warren.auth', USER_KEY = 'warren.user';
  var API = 'api'; // relative: works at / and behind a path prefix
  var enc = encodeURIComponent;

  // ---------- DOM helpers ----------
  function h(tag, attrs) {
    var el = document.createElement(tag);
    if (attrs) Object.keys(attrs).forEach(function (k) {
      var v = attrs[k];
      if (v == null || v === false) return;
      if (k.slice(0, 2) === 'on') el.addEventListener(k.slice(2), v);
      else if (k === 'class') el.className = v;
      else if (k === 'value') el.value = v;
      else el.setAttribute(k, v === true ? '' : v);
    });
    add(el, Array.prototype.slice.call(arguments, 2));
    return el;
  }
  function add(el, kids) {
    kids.forEach(function (c) {
      if (c == null || c === false) return;
      if (Array.isArray(c)) add(el, c);
      else el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    });
  }
  function $(sel, root) { return (root || document).querySelector(sel); }
  function get(o, path) {
    return path.split('.').reduce(function (a, k) { return a == null ? undefined : a[k]; }, o);
  }
  function fmt(v) {
    if (v == null) return '';
    if (typeof v === 'boolean') return v ? 'yes' : 'no';
    if (typeof v === 'object') return Object.keys(v).length ? JSON.stringify(v) : '';
    return String(v);
  }
  function fmtRate(v) { return typeof v === 'number' ? (v >= 100 ? v.toFixed(0) : v.toFixed(1)) + '/s' : ''; }
  function rateOf(o, stat) { return get(o, 'message_stats.' + stat + '_details.rate'); }
  function tagList(t) {
    if (Array.isArray(t)) return t.filter(Boolean);
    return String(t || '').split(',').map(function (s) { return s.trim(); }).filter(Boolean);
  }
  function exName(n) { return n === '' ? 'amq.default' : n; } // name used in API paths
  function exLabel(n) { return n === '' ? '(AMQP default)' : n; }
  function b64(s) {
    var bytes = new TextEncoder().encode(s), bin = '';
    bytes.forEach(function (b) { bin += String.fromCharCode(b); });
    return btoa(bin);
  }
  function parseJsonObject(text, what) {
    text = (text || '').trim();
    if (!text) return {};
    var v;
    try { v = JSON.parse(text); } catch (e) { throw new UiError(what + ' must be JSON: ' + e.message); }
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw new UiError(what + ' must be a JSON object');
    return v;
  }
  function UiError(msg) { this.message = msg; }
  // RabbitMQ HTML-escapes some error reasons; show them as plain text
  function unescapeHtml(t) {
    return String(t).replace(/&(lt|gt|quot|#39|amp);/g, function (m, e) { return { lt: '<', gt: '>', quot: '"', '#39': "'", amp: '&' }[e]; });
  }

  // ---------- messages ----------
  var msgBox = $('#messages');
  function flash(text, kind, key) {
    key = key || text;
    var old = msgBox.querySelector('[data-key="' + CSS.escape(key) + '"]');
    if (old) old.remove();
    var el = h('div', { class: 'msg ' + (kind || 'info'), 'data-key': key, 'data-kind': kind || 'info' },
      h('span', null, text),
      h('button', { type: 'button', class: 'close', title: 'Dismiss', onclick: function () { el.remove(); } }, '\u00d7'));
    msgBox.appendChild(el);
    if (kind === 'ok') setTimeout(function () { el.remove(); }, 6000);
  }
  function clearFlash(key) {
    var el = msgBox.querySelector('[data-key="' + CSS.escape(key) + '"]');
    if (el) el.remove();
  }
  function errText(e) {
    if (e instanceof ApiError) return (e.status ? e.status + ' ' : '') + e.error + (e.reason ? ': ' + e.reason : '');
    return e && e.message ? e.message : String(e);
  }
  function showError(e, key) {
    if (e && e.status === 401) return; // login form is shown instead
    flash(errText(e), 'error', key);
  }

  // ---------- API ----------
  function ApiError(status, error, reason) { this.status = status; this.error = error; this.reason = reason; this.message = error + ': ' + reason; }
  function api(method, path, body, headers) {
    var hd = { 'Authorization': 'Basic ' + (sessionStorage.getItem(AUTH_KEY) || ''), 'X-Requested-With': 'XMLHttpRequest' };
    if (body !== undefined) hd['Content-Type'] = 'application/json';
    Object.keys(headers || {}).forEach(function (k) { hd[k] = headers[k]; });
    return fetch(API + path, {
      method: method, headers: hd, cache: 'no-store', credentials: 'omit',
      body: body === undefined ? undefined : (typeof body === 'string' ? body : JSON.stringify(body))
    }).catch(function (e) {
      throw new ApiError(0, 'Network error', e.message || String(e));
    }).then(function (res) {
      return res.text().then(function (text) {
        var data = null;
        if (text) { try { data = JSON.parse(text); } catch (e) { data = text; } }
        if (res.status === 401) {
          logout('Not authorised (401): ' + ((data && data.reason) || 'wrong username or password'));
          throw new ApiError(401, 'not_authorised', data && data.reason || '');
        }
        if (!res.ok) {
          var isObj = data && typeof data === 'object';
          throw new ApiError(res.status, (isObj && data.error) || res.statusText || 'error',
            unescapeHtml((isObj && data.reason) || (typeof data === 'string' ? data.slice(0, 300) : '')));
        }
        return data;
      });
    });
  }
  function vhostNames() {
    return api('GET', '/vhosts').then(function (vs) { return vs.map(function (v) { return v.name; }); });
  }

  // ---------- login ----------
  var loginSec = $('#login'), mainEl = $('#main');
  function showLogin(message) {
    loginSec.hidden = false; mainEl.hidden = true;
    $('#nav').hidden = true; $('#session').hidden = true;
    var err = $('#login-error');
    err.hidden = !message; err.textContent = message || '';
    current = null;
    $('#login-user').focus();
  }
  function logout(message) {
    sessionStorage.removeItem(AUTH_KEY); sessionStorage.removeItem(USER_KEY);
    samples.length = 0; lastOverview = null;
    showLogin(message);
  }
  $('#login-form').addEventListener('submit', function (ev) {
    ev.preventDefault();
    var u = $('#login-user').value, p = $('#login-password').value;
    sessionStorage.setItem(AUTH_KEY, b64(u + ':' + p));
    sessionStorage.setItem(USER_KEY, u);
    api('GET', '/overview').then(function () {
      $('#login-password').value = '';
      route();
    }, function (e) { if (e.status !== 401) { sessionStorage.removeItem(AUTH_KEY); showLogin(errText(e)); } });
  });
  $('#logout').addEventListener('click', function () { logout(); });

  // ---------- overview sampler (client-side history) ----------
  var samples = [], lastOverview = null;
  function sample() {
    return api('GET', '/overview').then(function (o) {
      lastOverview = o;
      var ms = o.message_stats || {}, qt = o.queue_totals || {}, t = Date.now();
      var prev = samples[samples.length - 1];
      function rate(k) {
        var d = ms[k + '_details'];
        if (d && typeof d.rate === 'number') return d.rate;
        // fall back to the counters' difference between two polls
        if (prev && typeof ms[k] === 'number' && typeof prev.c[k] === 'number' && t > prev.t)
          return Math.max(0, (ms[k] - prev.c[k]) * 1000 / (t - prev.t));
        return 0;
      }
      samples.push({
        t: t, c: { publish: ms.publish, deliver_get: ms.deliver_get, ack: ms.ack },
        publish: rate('publish'), deliver_get: rate('deliver_get'), ack: rate('ack'),
        ready: qt.messages_ready || 0, unacked: qt.messages_unacknowledged || 0, messages: qt.messages || 0
      });
      while (samples.length > MAX_SAMPLES) samples.shift();
      return o;
    });
  }

  // ---------- chart (inline SVG) ----------
  var SVGNS = 'http://www.w3.org/2000/svg';
  function s(tag, attrs) {
    var el = document.createElementNS(SVGNS, tag);
    Object.keys(attrs || {}).forEach(function (k) { el.setAttribute(k, attrs[k]); });
    add(el, Array.prototype.slice.call(arguments, 2));
    return el;
  }
  function niceMax(v) {
    if (v <= 0) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(v))), m = v / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
  }
  function chart(name, series, unit) {
    var W = 600, H = 170, L = 48, R = 8, T = 8, B = 22, pw = W - L - R, ph = H - T - B;
    var span = MAX_SAMPLES * POLL, now = samples.length ? samples[samples.length - 1].t : Date.now();
    var max = 0;
    samples.forEach(function (p) { series.forEach(function (sr) { max = Math.max(max, p[sr.k]); }); });
    max = niceMax(max);
    var svg = s('svg', { viewBox: '0 0 ' + W + ' ' + H, class: 'chart', 'data-chart': name, role: 'img', 'aria-label': name });
    [0, 0.5, 1].forEach(function (f) {
      var y = T + ph - f * ph;
      svg.appendChild(s('line', { x1: L, x2: W - R, y1: y, y2: y, class: 'grid' }));
      var v = max * f;
      svg.appendChild(s('text', { x: L - 6, y: y + 4, 'text-anchor': 'end', class: 'axis' }, (v % 1 ? v.toFixed(1) : v) + unit));
    });
    svg.appendChild(s('text', { x: L, y: H - 4, class: 'axis' }, '-' + Math.round(span / 1000) + 's'));
    svg.appendChild(s('text', { x: W - R, y: H - 4, 'text-anchor': 'end', class: 'axis' }, 'now'));
    if (samples.length < 2) {
      svg.appendChild(s('text', { x: L + pw / 2, y: T + ph / 2, 'text-anchor': 'middle', class: 'axis' }, 'collecting samples\u2026'));
    }
    series.forEach(function (sr, i) {
      var pts = samples.map(function (p) {
        var x = L + pw - (now - p.t) / span * pw, y = T + ph - p[sr.k] / max * ph;
        return Math.max(L, x).toFixed(1) + ',' + y.toFixed(1);
      }).join(' ');
      if (samples.length) svg.appendChild(s('polyline', { points: pts, class: 'line c' + i, 'data-series': sr.k }));
    });
    var last = samples[samples.length - 1] || {};
    var legend = h('ul', { class: 'legend' }, series.map(function (sr, i) {
      var v = last[sr.k];
      return h('li', { 'data-series': sr.k }, h('i', { class: 'sw c' + i }), sr.t + ' ',
        h('b', null, v == null ? '-' : unit === '/s' ? fmtRate(v) : v));
    }));
    return h('div', { class: 'chartbox' }, svg, legend);
  }

  // ---------- tables ----------
  // cols: [{k: 'messages', t: 'Messages', num: true, f: row => node|string}]
  function table(name, cols, rows, keyFn) {
    return h('table', { 'data-table': name },
      h('thead', null, h('tr', null, cols.map(function (c) {
        return h('th', { 'data-col': c.k, class: c.num ? 'num' : null }, c.t);
      }))),
      h('tbody', null, rows.length ? rows.map(function (r) {
        return h('tr', { 'data-name': keyFn(r), 'data-vhost': typeof r.vhost === 'string' ? r.vhost : null },
          cols.map(function (c) {
            return h('td', { 'data-col': c.k, class: c.num ? 'num' : null }, c.f ? c.f(r) : fmt(get(r, c.k)));
          }));
      }) : h('tr', { class: 'empty' }, h('td', { colspan: cols.length }, 'Nothing to show.'))));
  }
  function badges(list) {
    return list.filter(Boolean).map(function (b) { return h('abbr', { class: 'badge', title: b[1] }, b[0]); });
  }
  function argBadges(args) {
    return Object.keys(args || {}).map(function (k) {
      return h('span', { class: 'badge arg', title: k }, k + ': ' + fmt(args[k]));
    });
  }
  function btn(label, onclick, cls) {
    return h('button', { type: 'button', class: cls || null, 'data-action': label.toLowerCase().replace(/\s+/g, '-'), onclick: onclick }, label);
  }
  function act(promise, okText, after) {
    return promise.then(function (r) { if (okText) flash(okText, 'ok'); if (after) after(r); return r; },
      function (e) { showError(e); });
  }

  // list page: filter box, optional add form, table refreshed on every poll
  function listPage(o) {
    var filter = h('input', { type: 'search', placeholder: 'Filter by name (regex)', 'data-filter': o.name, oninput: function () { render(true); } });
    var count = h('span', { class: 'count' });
    var holder = h('div', { class: 'table-wrap' });
    var rows = [], lastJson = '';
    function render(force) {
      var f = filter.value, re = null;
      try { re = f ? new RegExp(f, 'i') : null; } catch (e) { re = null; }
      var shown = rows.filter(function (r) {
        var k = String(o.key(r));
        return !f || (re ? re.test(k) : k.indexOf(f) >= 0);
      });
      count.textContent = shown.length + (shown.length !== rows.length ? ' of ' + rows.length : '') + ' item' + (rows.length === 1 ? '' : 's');
      holder.replaceChildren(table(o.name, o.cols, shown, o.key));
    }
    function refresh() {
      return api('GET', o.path).then(function (data) {
        var j = JSON.stringify(data);
        if (j === lastJson) return;
        lastJson = j; rows = Array.isArray(data) ? data : [];
        render();
      });
    }
    var page = {
      refresh: refresh,
      el: h('section', { 'data-page': o.name }, h('h2', null, o.title),
        h('div', { class: 'toolbar' }, filter, count), holder,
        o.form ? h('details', { class: 'add', open: o.formOpen || null }, h('summary', null, o.formTitle || 'Add'), o.form(function () { lastJson = ''; return refresh(); })) : null)
    };
    return page;
  }

  // forms: fields [{n:'name', t:'Name', type, options, value, req, area}] -> form with data-form
  function form(name, fields, submitLabel, onsubmit) {
    var inputs = {};
    var f = h('form', { 'data-form': name, class: 'form' }, fields.map(function (fd) {
      var input;
      if (fd.options) {
        input = h('select', { name: fd.n });
        var fill = function (opts) {
          input.replaceChildren.apply(input, opts.map(function (op) {
            var v = Array.isArray(op) ? op[0] : op, l = Array.isArray(op) ? op[1] : op;
            return h('option', { value: v, selected: v === fd.value || null }, l);
          }));
        };
        if (typeof fd.options === 'function') fd.options().then(fill, showError); else fill(fd.options);
      } else if (fd.area) {
        input = h('textarea', { name: fd.n, rows: fd.rows || 3, placeholder: fd.ph || null, required: fd.req || null }, fd.value || '');
      } else {
        input = h('input', { name: fd.n, type: fd.type || 'text', value: fd.value != null ? fd.value : null, placeholder: fd.ph || null, required: fd.req || null, min: fd.min, readonly: fd.ro || null });
      }
      inputs[fd.n] = input;
      return h('label', { class: fd.area ? 'wide' : null }, h('span', null, fd.t), input);
    }), h('div', { class: 'actions' }, h('button', { type: 'submit' }, submitLabel)));
    f.addEventListener('submit', function (ev) {
      ev.preventDefault();
      var vals = {};
      Object.keys(inputs).forEach(function (k) { vals[k] = inputs[k].value; });
      var b = f.querySelector('button[type=submit]');
      b.disabled = true;
      var done = function () { b.disabled = false; };
      try {
        Promise.resolve(onsubmit(vals, f)).then(done, function (e) { done(); showError(e); });
      } catch (e) { done(); showError(e); }
    });
    return f;
  }
  var vhostField = { n: 'vhost', t: 'Virtual host', options: function () { return vhostNames(); }, value: '/' };
  var boolOpts = [['true', 'yes'], ['false', 'no']];
  function link(href, text) { return h('a', { href: href }, text); }
  function queueHref(v, n) { return '#/queues/' + enc(v) + '/' + enc(n); }
  function exchangeHref(v, n) { return '#/exchanges/' + enc(v) + '/' + enc(exName(n)); }

  // ---------- pages ----------
  var PAGES = {};

  PAGES.overview = function () {
    var info = h('dl', { class: 'info' }), totals = h('div', { class: 'totals' });
    var charts = h('div', { class: 'charts' }), listeners = h('div', { class: 'table-wrap' });
    function stat(label, key, v) {
      return h('div', { class: 'stat', 'data-stat': key }, h('span', { class: 'v' }, v == null ? '-' : v), h('span', { class: 'l' }, label));
    }
    function render() {
      var o = lastOverview;
      if (!o) return;
      var ot = o.object_totals || {}, qt = o.queue_totals || {};
      info.replaceChildren(
        h('dt', null, 'Version'), h('dd', { 'data-stat': 'rabbitmq_version' }, (o.product_name ? o.product_name + ' ' : '') + (o.product_version || o.rabbitmq_version || '')),
        h('dt', null, 'RabbitMQ compatibility'), h('dd', { 'data-stat': 'compat' }, o.rabbitmq_version || ''),
        h('dt', null, 'Node'), h('dd', { 'data-stat': 'node' }, o.node || ''),
        h('dt', null, 'Cluster'), h('dd', { 'data-stat': 'cluster_name' }, o.cluster_name || ''),
        h('dt', null, 'Refresh'), h('dd', null, 'every ' + POLL / 1000 + ' s'));
      totals.replaceChildren(
        stat('Connections', 'object_totals.connections', ot.connections),
        stat('Channels', 'object_totals.channels', ot.channels),
        stat('Exchanges', 'object_totals.exchanges', ot.exchanges),
        stat('Queues', 'object_totals.queues', ot.queues),
        stat('Consumers', 'object_totals.consumers', ot.consumers),
        stat('Messages', 'queue_totals.messages', qt.messages),
        stat('Ready', 'queue_totals.messages_ready', qt.messages_ready),
        stat('Unacked', 'queue_totals.messages_unacknowledged', qt.messages_unacknowledged),
        stat('Publish', 'message_stats.publish_details.rate', fmtRate(rateOf(o, 'publish') || 0)),
        stat('Deliver / get', 'message_stats.deliver_get_details.rate', fmtRate(rateOf(o, 'deliver_get') || 0)),
        stat('Ack', 'message_stats.ack_details.rate', fmtRate(rateOf(o, 'ack') || 0)));
      charts.replaceChildren(
        h('div', null, h('h3', null, 'Message rates'), chart('rates', [{ k: 'publish', t: 'Publish' }, { k: 'deliver_get', t: 'Deliver / get' }, { k: 'ack', t: 'Ack' }], '/s')),
        h('div', null, h('h3', null, 'Queued messages'), chart('queued', [{ k: 'ready', t: 'Ready' }, { k: 'unacked', t: 'Unacked' }, { k: 'messages', t: 'Total' }], '')));
      listeners.replaceChildren(table('listeners', [
        { k: 'protocol', t: 'Protocol' }, { k: 'ip_address', t: 'Bound to' }, { k: 'port', t: 'Port', num: true }, { k: 'node', t: 'Node' }
      ], o.listeners || [], function (l) { return l.protocol + ':' + l.port; }));
    }
    return {
      el: h('section', { 'data-page': 'overview' }, h('h2', null, 'Overview'), info, totals, charts, h('h3', null, 'Listeners'), listeners),
      refresh: function () { return (lastOverview ? Promise.resolve() : sample()).then(render); }
    };
  };

  PAGES.connections = function () {
    return listPage({
      name: 'connections', title: 'Connections', path: '/connections', key: function (c) { return c.name; },
      cols: [
        { k: 'name', t: 'Name' }, { k: 'user', t: 'User' }, { k: 'vhost', t: 'Virtual host' },
        { k: 'peer', t: 'Client', f: function (c) { return (c.peer_host || '') + ':' + (c.peer_port || ''); } },
        { k: 'product', t: 'Product', f: function (c) { return fmt(get(c, 'client_properties.product')) + (get(c, 'client_properties.version') ? ' ' + c.client_properties.version : ''); } },
        { k: 'channels', t: 'Channels', num: true }, { k: 'state', t: 'State' },
        { k: 'actions', t: '', f: function (c) {
          return [link('#/trace/' + enc(c.name), 'Trace'), ' ', btn('Close', function () {
            if (!confirm('Close connection ' + c.name + '?')) return;
            act(api('DELETE', '/connections/' + enc(c.name), undefined, { 'X-Reason': 'Closed via Warren management UI' }), 'Connection closed', PAGES._refresh);
          }, 'danger')];
        } }
      ]
    });
  };

  // The protocol trace of one connection: every frame both ways, newest last.
  PAGES.trace = function (name) {
    var path = '/warren/connections/' + enc(name) + '/trace';
    var body = h('tbody');
    var note = h('p', { 'data-field': 'trace-state' }, 'Not tracing yet: start the trace, then use the connection.');
    function summary(l) {
      if (l.type === 'method') return l.method + ' ' + (l.fields || '');
      if (l.type === 'header') return 'content header, ' + l.body_size + ' octets' + (l.properties ? ' ' + l.properties : '');
      if (l.type === 'body') return 'body ' + l.size + ' octets: ' + (l.prefix || '');
      return l.type;
    }
    function refresh() {
      return api('GET', path).then(function (text) {
        var lines = String(text || '').split('\n').filter(Boolean).map(function (t) { try { return JSON.parse(t); } catch (e) { return null; } }).filter(Boolean);
        note.textContent = lines.length + ' frames recorded (the last 10,000 are kept).';
        body.replaceChildren.apply(body, lines.slice(-500).map(function (l) {
          return h('tr', { 'data-name': l.method || l.type },
            h('td', { 'data-col': 'time' }, new Date(l.ts).toISOString().slice(11, 23)),
            h('td', { 'data-col': 'dir' }, l.dir === 'in' ? 'client \u2192' : '\u2190 broker'),
            h('td', { 'data-col': 'channel', class: 'num' }, String(l.channel)),
            h('td', { 'data-col': 'frame' }, h('code', null, summary(l))));
        }));
      }, function (e) {
        if (e && e.status === 400) { note.textContent = 'Not tracing yet: start the trace, then use the connection.'; return; }
        throw e;
      });
    }
    return {
      refresh: refresh,
      el: h('section', { 'data-page': 'trace' }, h('h2', null, 'Protocol trace'),
        h('p', null, 'Connection ', h('code', null, name)),
        h('div', { class: 'actions' },
          btn('Start trace', function () { act(api('POST', path), 'Tracing', refresh); }),
          btn('Stop trace', function () { act(api('DELETE', path), 'Trace stopped', refresh); })),
        note,
        h('table', { 'data-table': 'trace' }, h('thead', null, h('tr', null, h('th', null, 'Time'), h('th', null, 'Direction'), h('th', null, 'Channel'), h('th', null, 'Frame'))), body))
    };
  };

  PAGES.channels = function () {
    return listPage({
      name: 'channels', title: 'Channels', path: '/channels', key: function (c) { return c.name; },
      cols: [
        { k: 'name', t: 'Name' }, { k: 'connection', t: 'Connection', f: function (c) { return fmt(get(c, 'connection_details.name')); } },
        { k: 'number', t: 'Number', num: true }, { k: 'user', t: 'User' }, { k: 'vhost', t: 'Virtual host' },
        { k: 'mode', t: 'Mode', f: function (c) { return badges([c.confirm && ['C', 'confirm mode'], c.transactional && ['T', 'transactional']]); } },
        { k: 'consumer_count', t: 'Consumers', num: true }, { k: 'prefetch_count', t: 'Prefetch', num: true },
        { k: 'messages_unacknowledged', t: 'Unacked', num: true }, { k: 'state', t: 'State' }
      ]
    });
  };

  PAGES.exchanges = function (vhost, name) {
    if (vhost !== undefined) return exchangePage(vhost, name || '');
    return listPage({
      name: 'exchanges', title: 'Exchanges', path: '/exchanges', key: function (e) { return e.name; },
      cols: [
        { k: 'vhost', t: 'Virtual host' },
        { k: 'name', t: 'Name', f: function (e) { return link(exchangeHref(e.vhost, e.name), exLabel(e.name)); } },
        { k: 'type', t: 'Type' },
        { k: 'features', t: 'Features', f: function (e) {
          return [badges([e.durable && ['D', 'durable'], e.auto_delete && ['AD', 'auto-delete'], e.internal && ['I', 'internal']]), argBadges(e.arguments)];
        } },
        { k: 'rate_in', t: 'In', num: true, f: function (e) { return fmtRate(rateOf(e, 'publish_in')); } },
        { k: 'rate_out', t: 'Out', num: true, f: function (e) { return fmtRate(rateOf(e, 'publish_out')); } }
      ],
      formTitle: 'Add a new exchange',
      form: function (reload) {
        return form('add-exchange', [vhostField,
          { n: 'name', t: 'Name', req: true },
          { n: 'type', t: 'Type', options: ['direct', 'fanout', 'topic', 'headers'] },
          { n: 'durable', t: 'Durable', options: boolOpts, value: 'true' },
          { n: 'auto_delete', t: 'Auto delete', options: [['false', 'no'], ['true', 'yes']] },
          { n: 'internal', t: 'Internal', options: [['false', 'no'], ['true', 'yes']] },
          { n: 'arguments', t: 'Arguments (JSON)', area: true, rows: 2, ph: '{"alternate-exchange": "my-ae"}' }
        ], 'Add exchange', function (v, f) {
          var body = { type: v.type, durable: v.durable === 'true', auto_delete: v.auto_delete === 'true', internal: v.internal === 'true', arguments: parseJsonObject(v.arguments, 'Arguments') };
          return api('PUT', '/exchanges/' + enc(v.vhost) + '/' + enc(v.name), body).then(function () {
            flash('Exchange ' + v.name + ' declared', 'ok'); f.elements.name.value = ''; return reload();
          });
        });
      }
    });
  };

  PAGES.queues = function (vhost, name) {
    if (vhost !== undefined) return queuePage(vhost, name || '');
    return listPage({
      name: 'queues', title: 'Queues', path: '/queues', key: function (q) { return q.name; },
      cols: [
        { k: 'vhost', t: 'Virtual host' },
        { k: 'name', t: 'Name', f: function (q) { return link(queueHref(q.vhost, q.name), q.name); } },
        { k: 'type', t: 'Type', f: function (q) { return q.type || 'classic'; } },
        { k: 'features', t: 'Features', f: function (q) {
          return [badges([q.durable && ['D', 'durable'], q.auto_delete && ['AD', 'auto-delete'], q.exclusive && ['Excl', 'exclusive']]),
            argBadges(q.arguments), q.policy ? h('span', { class: 'badge pol', title: 'policy' }, q.policy) : null];
        } },
        { k: 'state', t: 'State' }, { k: 'consumers', t: 'Consumers', num: true },
        { k: 'messages_ready', t: 'Ready', num: true }, { k: 'messages_unacknowledged', t: 'Unacked', num: true },
        { k: 'messages', t: 'Total', num: true },
        { k: 'rate_publish', t: 'Incoming', num: true, f: function (q) { return fmtRate(rateOf(q, 'publish')); } },
        { k: 'rate_deliver_get', t: 'Deliver / get', num: true, f: function (q) { return fmtRate(rateOf(q, 'deliver_get')); } },
        { k: 'rate_ack', t: 'Ack', num: true, f: function (q) { return fmtRate(rateOf(q, 'ack')); } }
      ],
      formTitle: 'Add a new queue',
      form: function (reload) {
        return form('add-queue', [vhostField,
          { n: 'name', t: 'Name', req: true },
          { n: 'type', t: 'Type', options: ['classic', 'quorum', 'stream'] },
          { n: 'durable', t: 'Durable', options: boolOpts, value: 'true' },
          { n: 'auto_delete', t: 'Auto delete', options: [['false', 'no'], ['true', 'yes']] },
          { n: 'arguments', t: 'Arguments (JSON)', area: true, rows: 2, ph: '{"x-max-length": 1000, "x-message-ttl": 60000}' }
        ], 'Add queue', function (v, f) {
          var args = parseJsonObject(v.arguments, 'Arguments');
          if (v.type !== 'classic') args['x-queue-type'] = v.type;
          var body = { durable: v.durable === 'true', auto_delete: v.auto_delete === 'true', arguments: args };
          return api('PUT', '/queues/' + enc(v.vhost) + '/' + enc(v.name), body).then(function () {
            flash('Queue ' + v.name + ' declared', 'ok'); f.elements.name.value = ''; return reload();
          });
        });
      }
    });
  };

  function details(pairs) {
    return pairs.map(function (p) { return [h('dt', null, p[0]), h('dd', { 'data-field': p[1] }, p[2])]; });
  }

  function bindingsTable(name, rows, vhost, showCol) {
    return table(name, [
      { k: 'source', t: 'From', f: function (b) { return link(exchangeHref(vhost, b.source), exLabel(b.source)); } },
      { k: 'destination', t: 'To', f: function (b) {
        return b.destination_type === 'queue' ? link(queueHref(vhost, b.destination), b.destination) : link(exchangeHref(vhost, b.destination), b.destination);
      } },
      { k: 'destination_type', t: 'Type' },
      { k: 'routing_key', t: 'Routing key' },
      { k: 'arguments', t: 'Arguments', f: function (b) { return argBadges(b.arguments); } },
      { k: 'actions', t: '', f: function (b) {
        if (b.source === '') return h('span', { class: 'muted' }, 'default binding');
        return btn('Unbind', function () {
          var path = '/bindings/' + enc(vhost) + '/e/' + enc(b.source) + '/' + (b.destination_type === 'queue' ? 'q' : 'e') + '/' + enc(b.destination) + '/' + enc(b.properties_key);
          act(api('DELETE', path), 'Binding removed', PAGES._refresh);
        }, 'danger');
      } }
    ].filter(function (c) { return showCol(c.k); }), rows, function (b) { return showCol('source') ? b.source : b.destination; });
  }

  function publishForm(vhost, exchange, fixedKey) {
    var result = h('div', { class: 'result', 'data-result': 'publish' });
    var f = form('publish', [
      { n: 'routing_key', t: 'Routing key', value: fixedKey != null ? fixedKey : '', ro: fixedKey != null },
      { n: 'delivery_mode', t: 'Delivery mode', options: [['2', '2 - persistent'], ['1', '1 - non-persistent']], value: '2' },
      { n: 'headers', t: 'Headers (JSON)', area: true, rows: 1, ph: '{"x-my-header": "value"}' },
      { n: 'properties', t: 'Other properties (JSON)', area: true, rows: 1, ph: '{"content_type": "text/plain", "message_id": "m1"}' },
      { n: 'payload', t: 'Payload', area: true, rows: 4 }
    ], 'Publish message', function (v) {
      var props = parseJsonObject(v.properties, 'Properties');
      props.delivery_mode = parseInt(v.delivery_mode, 10);
      props.headers = parseJsonObject(v.headers, 'Headers');
      result.textContent = '';
      return api('POST', '/exchanges/' + enc(vhost) + '/' + enc(exName(exchange)) + '/publish',
        { properties: props, routing_key: v.routing_key, payload: v.payload, payload_encoding: 'string' }).then(function (r) {
        var routed = !!(r && r.routed);
        result.className = 'result ' + (routed ? 'ok' : 'warn');
        result.setAttribute('data-routed', String(routed));
        result.textContent = routed ? 'Message published and routed.' : 'Message published, but not routed.';
        PAGES._refresh();
      });
    });
    return h('div', null, f, result);
  }

  function queuePage(vhost, name) {
    var base = '/queues/' + enc(vhost) + '/' + enc(name);
    var dl = h('dl', { class: 'info' }), bindHolder = h('div', { class: 'table-wrap' });
    var getResult = h('div', { class: 'result', 'data-result': 'get' });
    function render(q) {
      dl.replaceChildren.apply(dl, [].concat.apply([], details([
        ['Virtual host', 'vhost', q.vhost], ['Type', 'type', q.type || 'classic'], ['State', 'state', fmt(q.state)],
        ['Features', 'features', badges([q.durable && ['D', 'durable'], q.auto_delete && ['AD', 'auto-delete'], q.exclusive && ['Excl', 'exclusive']])],
        ['Arguments', 'arguments', argBadges(q.arguments)], ['Policy', 'policy', fmt(q.policy)], ['Node', 'node', fmt(q.node)],
        ['Consumers', 'consumers', fmt(q.consumers)],
        ['Ready', 'messages_ready', fmt(q.messages_ready)], ['Unacked', 'messages_unacknowledged', fmt(q.messages_unacknowledged)],
        ['Total', 'messages', fmt(q.messages)],
        ['Incoming', 'rate_publish', fmtRate(rateOf(q, 'publish') || 0)],
        ['Deliver / get', 'rate_deliver_get', fmtRate(rateOf(q, 'deliver_get') || 0)],
        ['Ack', 'rate_ack', fmtRate(rateOf(q, 'ack') || 0)]
      ])));
    }
    function refresh() {
      return Promise.all([
        api('GET', base).then(render, function (e) {
          if (e.status === 404) { dl.replaceChildren(h('dt', null, 'Status'), h('dd', { 'data-field': 'missing' }, 'This queue does not exist.')); return; }
          throw e;
        }),
        api('GET', base + '/bindings').then(function (bs) {
          bindHolder.replaceChildren(bindingsTable('bindings', bs || [], vhost, function (k) { return k !== 'destination' && k !== 'destination_type'; }));
        }, function (e) { if (e.status !== 404) throw e; })
      ]);
    }
    var bindForm = form('add-binding', [
      { n: 'source', t: 'From exchange', req: true },
      { n: 'routing_key', t: 'Routing key' },
      { n: 'arguments', t: 'Arguments (JSON)', area: true, rows: 1 }
    ], 'Bind', function (v) {
      return api('POST', '/bindings/' + enc(vhost) + '/e/' + enc(v.source) + '/q/' + enc(name),
        { routing_key: v.routing_key, arguments: parseJsonObject(v.arguments, 'Arguments') }).then(function () { flash('Binding added', 'ok'); return refresh(); });
    });
    var getForm = form('get', [
      { n: 'ackmode', t: 'Ack mode', options: [['ack_requeue_true', 'Nack message requeue true'], ['ack_requeue_false', 'Automatic ack'], ['reject_requeue_true', 'Reject requeue true'], ['reject_requeue_false', 'Reject requeue false']] },
      { n: 'encoding', t: 'Encoding', options: [['auto', 'Auto string / base64'], ['base64', 'base64']] },
      { n: 'count', t: 'Messages', type: 'number', value: '1', min: '1' }
    ], 'Get messages', function (v) {
      getResult.replaceChildren();
      return api('POST', base + '/get', { count: parseInt(v.count, 10) || 1, ackmode: v.ackmode, encoding: v.encoding, truncate: 50000 }).then(function (msgs) {
        msgs = msgs || [];
        getResult.className = 'result';
        getResult.setAttribute('data-count', String(msgs.length));
        if (!msgs.length) { getResult.append(h('p', { class: 'muted' }, 'Queue is empty.')); return; }
        msgs.forEach(function (m, i) {
          getResult.append(h('div', { class: 'message', 'data-message': i },
            h('h4', null, 'Message ' + (i + 1)),
            h('dl', { class: 'info' }, details([
              ['Exchange', 'exchange', exLabel(m.exchange)], ['Routing key', 'routing_key', fmt(m.routing_key)],
              ['Redelivered', 'redelivered', fmt(m.redelivered)], ['Remaining', 'message_count', fmt(m.message_count)],
              ['Properties', 'properties', h('pre', null, JSON.stringify(m.properties || {}, null, 1))],
              ['Payload', 'payload_bytes', (m.payload_bytes != null ? m.payload_bytes + ' bytes, ' : '') + 'encoding: ' + fmt(m.payload_encoding)]
            ])),
            h('pre', { class: 'payload', 'data-field': 'payload' }, m.payload)));
        });
        PAGES._refresh();
      });
    });
    var el = h('section', { 'data-page': 'queue', 'data-name': name, 'data-vhost': vhost },
      h('p', { class: 'crumbs' }, link('#/queues', 'Queues'), ' / ', vhost),
      h('h2', null, 'Queue ', h('span', { class: 'objname' }, name)),
      dl,
      h('h3', null, 'Bindings'), bindHolder, h('details', { class: 'add' }, h('summary', null, 'Add binding to this queue'), bindForm),
      h('h3', null, 'Publish message'), h('p', { class: 'muted' }, 'Published to the default exchange with the queue name as routing key.'),
      publishForm(vhost, '', name),
      h('h3', null, 'Get messages'), h('p', { class: 'muted' }, 'Getting messages is a destructive action unless they are requeued.'), getForm, getResult,
      h('h3', null, 'Purge / delete'),
      h('div', { class: 'actions' },
        btn('Purge messages', function () {
          if (!confirm('Purge all ready messages of ' + name + '?')) return;
          act(api('DELETE', base + '/contents'), 'Queue purged', refresh);
        }, 'danger'),
        btn('Delete queue', function () {
          if (!confirm('Delete queue ' + name + '?')) return;
          act(api('DELETE', base), 'Queue ' + name + ' deleted', function () { location.hash = '#/queues'; });
        }, 'danger')));
    return { el: el, refresh: refresh };
  }

  function exchangePage(vhost, name) {
    if (name === 'amq.default') name = '';
    var base = '/exchanges/' + enc(vhost) + '/' + enc(exName(name));
    var dl = h('dl', { class: 'info' }), bindHolder = h('div', { class: 'table-wrap' });
    function refresh() {
      return Promise.all([
        api('GET', base).then(function (e) {
          dl.replaceChildren.apply(dl, [].concat.apply([], details([
            ['Virtual host', 'vhost', e.vhost], ['Type', 'type', e.type],
            ['Features', 'features', badges([e.durable && ['D', 'durable'], e.auto_delete && ['AD', 'auto-delete'], e.internal && ['I', 'internal']])],
            ['Arguments', 'arguments', argBadges(e.arguments)], ['Policy', 'policy', fmt(e.policy)],
            ['In', 'rate_in', fmtRate(rateOf(e, 'publish_in') || 0)], ['Out', 'rate_out', fmtRate(rateOf(e, 'publish_out') || 0)]
          ])));
        }, function (e) {
          if (e.status === 404) { dl.replaceChildren(h('dt', null, 'Status'), h('dd', { 'data-field': 'missing' }, 'This exchange does not exist.')); return; }
          throw e;
        }),
        api('GET', base + '/bindings/source').then(function (bs) {
          bindHolder.replaceChildren(bindingsTable('bindings', bs || [], vhost, function (k) { return k !== 'source'; }));
        }, function (e) { if (e.status !== 404) throw e; })
      ]);
    }
    var builtin = name === '' || name.indexOf('amq.') === 0;
    return {
      refresh: refresh,
      el: h('section', { 'data-page': 'exchange', 'data-name': name, 'data-vhost': vhost },
        h('p', { class: 'crumbs' }, link('#/exchanges', 'Exchanges'), ' / ', vhost),
        h('h2', null, 'Exchange ', h('span', { class: 'objname' }, exLabel(name))),
        dl, h('h3', null, 'Bindings (this exchange is the source)'), bindHolder,
        h('h3', null, 'Publish message'), publishForm(vhost, name, null),
        builtin ? null : [h('h3', null, 'Delete'), h('div', { class: 'actions' }, btn('Delete exchange', function () {
          if (!confirm('Delete exchange ' + name + '?')) return;
          act(api('DELETE', base), 'Exchange ' + name + ' deleted', function () { location.hash = '#/exchanges'; });
        }, 'danger'))])
    };
  }

  PAGES.users = function () {
    return listPage({
      name: 'users', title: 'Users', path: '/users', key: function (u) { return u.name; }, formOpen: false,
      cols: [
        { k: 'name', t: 'Name' },
        { k: 'tags', t: 'Tags', f: function (u) { return tagList(u.tags).join(', '); } },
        { k: 'has_password', t: 'Has password', f: function (u) { return u.password_hash ? 'yes' : 'no'; } },
        { k: 'actions', t: '', f: function (u) {
          return btn('Delete', function () {
            if (!confirm('Delete user ' + u.name + '?')) return;
            act(api('DELETE', '/users/' + enc(u.name)), 'User ' + u.name + ' deleted', PAGES._refresh);
          }, 'danger');
        } }
      ],
      formTitle: 'Add / update a user',
      form: function (reload) {
        return form('add-user', [
          { n: 'name', t: 'Username', req: true },
          { n: 'password', t: 'Password', type: 'password', req: true },
          { n: 'tags', t: 'Tags (comma separated)', ph: 'administrator, monitoring, management' }
        ], 'Add / update user', function (v, f) {
          return api('PUT', '/users/' + enc(v.name), { password: v.password, tags: tagList(v.tags).join(',') }).then(function () {
            flash('User ' + v.name + ' saved', 'ok'); f.reset(); return reload();
          });
        });
      }
    });
  };

  PAGES.vhosts = function () {
    return listPage({
      name: 'vhosts', title: 'Virtual hosts', path: '/vhosts', key: function (v) { return v.name; },
      cols: [
        { k: 'name', t: 'Name' }, { k: 'description', t: 'Description' },
        { k: 'messages_ready', t: 'Ready', num: true }, { k: 'messages_unacknowledged', t: 'Unacked', num: true }, { k: 'messages', t: 'Total', num: true },
        { k: 'actions', t: '', f: function (v) {
          return btn('Delete', function () {
            if (!confirm('Delete virtual host ' + v.name + ' and everything in it?')) return;
            act(api('DELETE', '/vhosts/' + enc(v.name)), 'Virtual host ' + v.name + ' deleted', PAGES._refresh);
          }, 'danger');
        } }
      ],
      formTitle: 'Add a new virtual host',
      form: function (reload) {
        return form('add-vhost', [{ n: 'name', t: 'Name', req: true }, { n: 'description', t: 'Description' }], 'Add virtual host', function (v, f) {
          return api('PUT', '/vhosts/' + enc(v.name), v.description ? { description: v.description } : {}).then(function () {
            flash('Virtual host ' + v.name + ' added', 'ok'); f.reset(); return reload();
          });
        });
      }
    });
  };

  PAGES.permissions = function () {
    return listPage({
      name: 'permissions', title: 'Permissions', path: '/permissions', key: function (p) { return p.user; },
      cols: [
        { k: 'user', t: 'User' }, { k: 'vhost', t: 'Virtual host' },
        { k: 'configure', t: 'Configure' }, { k: 'write', t: 'Write' }, { k: 'read', t: 'Read' },
        { k: 'actions', t: '', f: function (p) {
          return btn('Clear', function () {
            if (!confirm('Clear permissions of ' + p.user + ' on ' + p.vhost + '?')) return;
            act(api('DELETE', '/permissions/' + enc(p.vhost) + '/' + enc(p.user)), 'Permissions cleared', PAGES._refresh);
          }, 'danger');
        } }
      ],
      formTitle: 'Set permissions',
      form: function (reload) {
        return form('set-permissions', [
          { n: 'user', t: 'User', options: function () { return api('GET', '/users').then(function (us) { return us.map(function (u) { return u.name; }); }); } },
          vhostField,
          { n: 'configure', t: 'Configure regexp', value: '.*' }, { n: 'write', t: 'Write regexp', value: '.*' }, { n: 'read', t: 'Read regexp', value: '.*' }
        ], 'Set permission', function (v) {
          return api('PUT', '/permissions/' + enc(v.vhost) + '/' + enc(v.user), { configure: v.configure, write: v.write, read: v.read }).then(function () {
            flash('Permissions of ' + v.user + ' on ' + v.vhost + ' set', 'ok'); return reload();
          });
        });
      }
    });
  };

  PAGES.policies = function () {
    return listPage({
      name: 'policies', title: 'Policies', path: '/policies', key: function (p) { return p.name; },
      cols: [
        { k: 'vhost', t: 'Virtual host' }, { k: 'name', t: 'Name' }, { k: 'pattern', t: 'Pattern' },
        { k: 'apply-to', t: 'Apply to' }, { k: 'priority', t: 'Priority', num: true },
        { k: 'definition', t: 'Definition', f: function (p) { return argBadges(p.definition); } },
        { k: 'actions', t: '', f: function (p) {
          return btn('Delete', function () {
            if (!confirm('Delete policy ' + p.name + '?')) return;
            act(api('DELETE', '/policies/' + enc(p.vhost) + '/' + enc(p.name)), 'Policy ' + p.name + ' deleted', PAGES._refresh);
          }, 'danger');
        } }
      ],
      formTitle: 'Add / update a policy',
      form: function (reload) {
        return form('add-policy', [vhostField,
          { n: 'name', t: 'Name', req: true }, { n: 'pattern', t: 'Pattern', req: true, ph: '^amq\\.' },
          { n: 'apply-to', t: 'Apply to', options: [['all', 'Exchanges and queues'], ['queues', 'Queues'], ['exchanges', 'Exchanges'], ['classic_queues', 'Classic queues'], ['quorum_queues', 'Quorum queues'], ['streams', 'Streams']] },
          { n: 'priority', t: 'Priority', type: 'number', value: '0' },
          { n: 'definition', t: 'Definition (JSON)', area: true, rows: 3, req: true, ph: '{"max-length": 1000, "message-ttl": 60000}' }
        ], 'Add / update policy', function (v, f) {
          var body = { pattern: v.pattern, 'apply-to': v['apply-to'], priority: parseInt(v.priority, 10) || 0, definition: parseJsonObject(v.definition, 'Definition') };
          return api('PUT', '/policies/' + enc(v.vhost) + '/' + enc(v.name), body).then(function () {
            flash('Policy ' + v.name + ' saved', 'ok'); f.elements.name.value = ''; return reload();
          });
        });
      }
    });
  };

  PAGES.definitions = function () {
    var file = h('input', { type: 'file', accept: '.json,application/json', 'data-input': 'definitions-file' });
    return {
      refresh: null,
      el: h('section', { 'data-page': 'definitions' }, h('h2', null, 'Definitions'),
        h('h3', null, 'Export'),
        h('p', null, 'Download the broker\u2019s users, virtual hosts, permissions, policies, exchanges, queues and bindings as JSON.'),
        btn('Download definitions', function () {
          act(api('GET', '/definitions'), null, function (defs) {
            var blob = new Blob([JSON.stringify(defs, null, 2)], { type: 'application/json' });
            var a = h('a', { href: URL.createObjectURL(blob), download: 'warren-definitions-' + new Date().toISOString().slice(0, 10) + '.json' });
            document.body.appendChild(a); a.click(); a.remove();
            setTimeout(function () { URL.revokeObjectURL(a.href); }, 10000);
          });
        }),
        h('h3', null, 'Import'),
        h('p', null, 'Upload a definitions file; objects in it are created or updated, nothing is deleted.'),
        h('div', { class: 'actions' }, file, btn('Upload definitions', function () {
          var f = file.files && file.files[0];
          if (!f) { flash('Choose a definitions file first', 'error', 'defs'); return; }
          f.text().then(function (text) {
            try { JSON.parse(text); } catch (e) { throw new UiError('The file is not valid JSON: ' + e.message); }
            return api('POST', '/definitions', text);
          }).then(function () { flash('Definitions imported from ' + f.name, 'ok'); }, showError);
        })))
    };
  };

  // ---------- router & polling ----------
  var current = null, busy = false;
  PAGES._refresh = function () { if (current && current.refresh) current.refresh().catch(function (e) { showError(e, 'poll'); }); };
  function parseHash() {
    var raw = location.hash.replace(/^#\/?/, '');
    if (!raw) return ['overview'];
    return raw.split('/').map(function (p) { try { return decodeURIComponent(p); } catch (e) { return p; } });
  }
  function route() {
    if (!sessionStorage.getItem(AUTH_KEY)) { showLogin(); return; }
    loginSec.hidden = true; mainEl.hidden = false;
    $('#nav').hidden = false; $('#session').hidden = false;
    $('#whoami').textContent = sessionStorage.getItem(USER_KEY) || '';
    var parts = parseHash(), name = parts[0];
    var fn = Object.prototype.hasOwnProperty.call(PAGES, name) && name[0] !== '_' ? PAGES[name] : PAGES.overview;
    Array.prototype.forEach.call(document.querySelectorAll('#nav a'), function (a) {
      a.classList.toggle('active', a.getAttribute('data-nav') === (fn === PAGES.overview ? 'overview' : name));
    });
    var page = fn.apply(null, parts.slice(1));
    current = page;
    mainEl.replaceChildren(page.el);
    if (page.refresh) page.refresh().then(stamp, function (e) { showError(e, 'poll'); });
  }
  function stamp() {
    clearFlash('poll');
    $('#updated').textContent = 'updated ' + new Date().toLocaleTimeString();
  }
  function tick() {
    if (!sessionStorage.getItem(AUTH_KEY) || busy || document.hidden && samples.length) return;
    busy = true;
    var page = current;
    sample().catch(function (e) { showError(e, 'poll'); }).then(function () {
      return page && page === current && page.refresh ? page.refresh() : null;
    }).then(stamp, function (e) { showError(e, 'poll'); }).then(function () { busy = false; });
  }
  window.addEventListener('hashchange', route);
  setInterval(tick, POLL);
  route();
  if (sessionStorage.getItem(AUTH_KEY)) tick();
})();
