(function () {
  'use strict';
  var D = JSON.parse(document.getElementById('ftprof-data').textContent);
  var F = ftprof, el = F.el;
  var h1 = document.getElementById('title');
  h1.textContent = D.title; h1.title = D.title;
  document.title = D.title;
  document.getElementById('subtitle').textContent = D.scaling + ' scaling of ' + D.command + ' — measure: ' + D.measure + ', ' + D.online_cpus + ' online CPUs';
  D.fits.forEach(function (f) { document.getElementById('fits').appendChild(el('li', null, f)); });
  var colors = {};
  D.categories.forEach(function (c) { colors[c.name] = c.color; });
  var body = document.querySelector('#points tbody');
  D.points.forEach(function (p) {
    var tr = el('tr');
    tr.appendChild(el('td', { class: 'num' }, String(p.threads) + (p.oversubscribed ? ' (oversubscribed)' : '')));
    tr.appendChild(el('td', { class: 'num' }, p.median.toPrecision(4) + (p.failed_runs ? ' (' + p.failed_runs + ' failed)' : '')));
    tr.appendChild(el('td', { class: 'num' }, p.speedup == null ? '—' : p.speedup.toFixed(2)));
    tr.appendChild(el('td', { class: 'num' }, p.efficiency == null ? '—' : p.efficiency.toFixed(2)));
    var td = el('td');
    Object.keys(p.categories).sort(function (a, b) { return p.categories[b] - p.categories[a]; }).forEach(function (k) {
      var v = p.categories[k];
      if (v < 0.005) return;
      var b = el('span', { class: 'bar', title: k + ' ' + (100 * v).toFixed(1) + ' %' });
      b.style.width = Math.max(1, 300 * v) + 'px'; b.style.background = colors[k] || '#999';
      td.appendChild(b);
    });
    var top = Object.keys(p.categories).sort(function (a, b) { return p.categories[b] - p.categories[a]; }).slice(0, 3)
      .map(function (k) { return k + ' ' + (100 * p.categories[k]).toFixed(0) + ' %'; }).join(', ');
    td.appendChild(el('div', { class: 'lines-cell' }, top));
    tr.appendChild(td);
    var rt = el('td');
    if (p.report) rt.appendChild(el('a', { href: p.report }, p.report));
    tr.appendChild(rt);
    body.appendChild(tr);
  });
  var box = document.getElementById('diff');
  if (!D.diff) {
    document.getElementById('diff-what').textContent = '(needs two profiled thread counts)';
    box.appendChild(el('div', { class: 'empty' }, 'No differential flamegraph: fewer than two thread counts were profiled.'));
  } else {
    var lo = D.diff[0], hi = D.diff[1], root = D.diff[2];
    document.getElementById('diff-what').textContent = '(width: thread time at N = ' + hi + '; red: grew from N = ' + lo + ', blue: shrank)';
    var chart = flamegraph()
      .width(Math.max(600, box.clientWidth || 1200)).cellHeight(18).minFrameSize(1).transitionDuration(0).sort(true)
      .setColorMapper(function (d) {
        if (d.highlight) return '#e600e6';
        var r = d.data.delta / Math.max(1, d.data.value);
        var k = Math.min(1, Math.abs(r));
        var c = Math.round(235 - 150 * k);
        return r > 0 ? 'rgb(235,' + c + ',' + c + ')' : 'rgb(' + c + ',' + c + ',235)';
      })
      .setLabelHandler(function (d) {
        return d.data.name + ' — ' + F.fmtUs(d.data.value) + ' at N = ' + hi + ' (' + (d.data.delta >= 0 ? '+' : '−') + F.fmtUs(Math.abs(d.data.delta)) + ')';
      })
      .setDetailsElement(document.getElementById('details'));
    d3.select(box).datum(root).call(chart);
  }
  document.body.setAttribute('data-rendered', '1');
})();
