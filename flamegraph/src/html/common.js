// Shared helpers of ftprof's HTML reports (no network: everything is inline).
var ftprof = (function () {
  'use strict';
  function fmtUs(us) {
    if (us >= 1e6) return (us / 1e6).toFixed(2) + ' s';
    if (us >= 1e4) return (us / 1e3).toFixed(0) + ' ms';
    if (us >= 1e3) return (us / 1e3).toFixed(1) + ' ms';
    return Math.round(us) + ' µs';
  }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  var KIND_COLORS = ['#c8c8c8', '#50a0e6', '#eb8c3c', '#c85a5a', '#a0a0a0', '#a0a0a0', '#f0be6e'];
  // Build the d3-flame-graph tree of stacks [tid, frames, cat, samples, wait_us].
  // weight(stack) -> µs; leafMark(stack) -> true to mark the path (highlight).
  function tree(D, rootName, stacks, weight, mark) {
    var root = { name: rootName, value: 0, children: [], kids: {}, kind: 0 };
    stacks.forEach(function (st) {
      var w = weight(st);
      if (!(w > 0)) return;
      var hl = mark ? mark(st) : false;
      var n = root;
      n.value += w;
      if (hl) n.hl = true;
      var fr = st[1];
      for (var i = 0; i < fr.length; i++) {
        var f = fr[i];
        var c = n.kids[f];
        if (!c) {
          c = { name: D.frames[f][0], kind: D.frames[f][1], value: 0, children: [], kids: {} };
          n.kids[f] = c;
          n.children.push(c);
        }
        c.value += w;
        if (hl) c.hl = true;
        if (c.kind === 5) c.cat = st[2];
        n = c;
      }
    });
    (function strip(n) { delete n.kids; n.children.forEach(strip); })(root);
    return root;
  }
  function colorOf(D, data) {
    if (data.kind === 5 && data.cat !== undefined) return D.categories[data.cat].color;
    return KIND_COLORS[data.kind] || '#bbbbbb';
  }
  function legend(D, node, extra) {
    node.textContent = '';
    var items = [['Python', KIND_COLORS[1]], ['native', KIND_COLORS[2]], ['native, inlined', KIND_COLORS[6]], ['kernel', KIND_COLORS[3]]];
    D.categories.forEach(function (c) { if (!c.on_cpu || c.contention) items.push(['wait: ' + c.name, c.color]); });
    (extra || []).forEach(function (x) { items.push(x); });
    items.forEach(function (it) {
      var s = el('span');
      var sw = el('span', { class: 'sw' });
      sw.style.background = it[1];
      s.appendChild(sw);
      s.appendChild(document.createTextNode(it[0]));
      node.appendChild(s);
    });
  }
  function sortable(table, rows, render) {
    var key = null, dir = -1;
    table.querySelectorAll('th[data-key]').forEach(function (th) {
      th.addEventListener('click', function () {
        var k = th.getAttribute('data-key');
        dir = (key === k) ? -dir : (typeof rows[0] === 'object' && typeof rows[0][k] === 'string' ? 1 : -1);
        key = k;
        rows.sort(function (a, b) { return (a[k] < b[k] ? -1 : a[k] > b[k] ? 1 : 0) * dir; });
        table.querySelectorAll('th').forEach(function (h) { h.classList.remove('asc', 'desc'); });
        th.classList.add(dir > 0 ? 'asc' : 'desc');
        render();
      });
    });
  }
  return { fmtUs: fmtUs, el: el, tree: tree, colorOf: colorOf, legend: legend, sortable: sortable };
})();
