// Regenerates qs-nested-ne-names.txt: every name built from up to four of
// the parts below (after "u" or alone) that qs (the parser behind Express's
// extended query and form bodies) turns into an object with a `$ne` key.
// Generated with qs 6.17.1. Usage: npm install qs && node gen-qs-names.js > qs-nested-ne-names.txt
const qs = require('qs');
const parts = ['[', ']', 'x', '[$ne]', '$ne', '[]', '.', '[x]', '%5B', '%5D', '=', ' '];
const out = new Set();
function hasOp(o) {
  if (o && typeof o === 'object') for (const k of Object.keys(o)) {
    if (k === '$ne' || hasOp(o[k])) return true;
  }
  return false;
}
function rec(s, d) {
  if (d === 0) return;
  for (const p of parts) {
    const k = s + p;
    if (hasOp(qs.parse(k + '=1', { allowPrototypes: true }))) out.add(k);
    rec(k, d - 1);
  }
}
rec('u', 4);
rec('', 4);
for (const k of out) console.log(k);
