// Validates CycloneDX 1.5 JSON documents against the official schema
// (bom-1.5.schema.json with spdx.schema.json and jsf-0.82.schema.json, as
// shipped in @cyclonedx/cyclonedx-library's res/schema/ and applied by its
// ajv-based validator), then checks what the schema cannot: every bom-ref
// is unique and every dependency names a component of the document.
// usage: node validate.mjs FILE...   exit 0 valid, 1 invalid, 2 usage.
import { readFileSync } from 'node:fs';
import { Spec, Validation } from '@cyclonedx/cyclonedx-library';

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error('usage: node validate.mjs FILE...');
  process.exit(2);
}
const validator = new Validation.JsonStrictValidator(Spec.Version.v1dot5);
let bad = 0;
for (const file of files) {
  const text = readFileSync(file, 'utf8');
  const problems = [];
  const errors = await validator.validate(text);
  if (errors !== null) {
    problems.push(`schema: ${JSON.stringify(errors, null, 1).slice(0, 4000)}`);
  } else {
    const doc = JSON.parse(text);
    const refs = new Set();
    const all = [doc.metadata?.component, ...(doc.components ?? [])].filter(Boolean);
    for (const c of all) {
      if (c['bom-ref'] === undefined) continue;
      if (refs.has(c['bom-ref'])) problems.push(`bom-ref given twice: ${c['bom-ref']}`);
      refs.add(c['bom-ref']);
    }
    for (const d of doc.dependencies ?? []) {
      for (const r of [d.ref, ...(d.dependsOn ?? [])]) {
        if (!refs.has(r)) problems.push(`dependency on an unknown bom-ref: ${r}`);
      }
    }
  }
  if (problems.length > 0) {
    bad++;
    console.log(`${file}: INVALID`);
    for (const p of problems) console.log(`  ${p}`);
  } else {
    console.log(`${file}: valid CycloneDX 1.5`);
  }
}
process.exit(bad > 0 ? 1 : 0);
