#!/usr/bin/env node
// Parses and validates an AsyncAPI document with @asyncapi/parser (its
// default ruleset: the AsyncAPI JSON Schema, references, channel parameters,
// unique ids, payload schemas...) and prints every diagnostic.
//
//   node scripts/asyncapi-validate.mjs [--modules DIR] [--strict] [FILE]
//
// FILE defaults to docs/asyncapi.yaml. DIR is the node_modules that holds
// @asyncapi/parser (default .dev/npm/node_modules, where
// `scripts/devenv.py outside-in-tools` installs it). Exits 1 on any error,
// and with --strict on any warning too; on success prints one JSON line with
// the counts of channels, operations and messages.

import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
let modules = path.join(root, '.dev', 'npm', 'node_modules');
let strict = false;
let file = path.join(root, 'docs', 'asyncapi.yaml');
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--modules') modules = path.resolve(args[++i]);
  else if (args[i] === '--strict') strict = true;
  else file = path.resolve(args[i]);
}

// ESM ignores NODE_PATH: load the parser from the given node_modules.
const require = createRequire(path.join(modules, 'noop.js'));
const { Parser, DiagnosticSeverity } = require('@asyncapi/parser');

const SEVERITY = {
  [DiagnosticSeverity.Error]: 'error',
  [DiagnosticSeverity.Warning]: 'warning',
  [DiagnosticSeverity.Information]: 'info',
  [DiagnosticSeverity.Hint]: 'hint',
};

const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(file, 'utf8'), {
  source: file,
});

const relative = path.relative(process.cwd(), file) || file;
for (const d of diagnostics) {
  const where = d.range ? `${relative}:${d.range.start.line + 1}:${d.range.start.character + 1}` : relative;
  const at = d.path && d.path.length ? ` (at ${d.path.join('.')})` : '';
  console.error(`${where}: ${SEVERITY[d.severity] ?? d.severity}: ${d.code}: ${d.message}${at}`);
}
const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error).length;
const warnings = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Warning).length;
if (!document || errors > 0 || (strict && warnings > 0)) {
  console.error(`${relative}: invalid: ${errors} error(s), ${warnings} warning(s)`);
  process.exit(1);
}
console.log(JSON.stringify({
  file: relative,
  asyncapi: document.version(),
  channels: document.channels().length,
  operations: document.operations().length,
  messages: document.components().messages().length,
  warnings,
}));
