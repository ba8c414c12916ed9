// Compiles a JSON Schema with ajv 8 in strict mode, as a form editor (JSON Forms, RJSF)
// would, with only the `secret` keyword registered (as Flow's UI does) and ajv-formats
// for the standard formats, then validates every case against it.
//
// Usage: node check.cjs <dir holding node_modules> <cases.json>
// cases.json: {"schema": <schema>, "cases": [{"name": "...", "instance": <value>}, ...]}
// Prints {"results": [{"name": "...", "valid": bool, "errors": [...]}, ...]} on stdout.
// Exits 2 (message on stderr) if the schema does not compile or ajv warns about it:
// strict mode turns every unknown keyword or format into an error, and `strict: true`
// makes the type, tuple and `required` checks errors too instead of warnings.
"use strict";
const fs = require("fs");
const path = require("path");
const { createRequire } = require("module");

const [dir, casesPath] = process.argv.slice(2);
const load = createRequire(path.join(path.resolve(dir), "package.json"));
const Ajv2020 = load("ajv/dist/2020").default;
const addFormats = load("ajv-formats").default;

const warnings = [];
const logger = {
  log: () => {},
  warn: (...args) => warnings.push(args.join(" ")),
  error: (...args) => warnings.push(args.join(" ")),
};
const { schema, cases } = JSON.parse(fs.readFileSync(casesPath, "utf8"));
const ajv = new Ajv2020({ strict: true, allErrors: true, logger });
addFormats(ajv);
ajv.addKeyword("secret");
let validate;
try {
  validate = ajv.compile(schema);
} catch (err) {
  process.stderr.write(`ajv ${load("ajv/package.json").version} strict mode refused the schema: ${err.message}\n`);
  process.exit(2);
}
if (warnings.length > 0) {
  process.stderr.write(`ajv warned about the schema:\n${warnings.join("\n")}\n`);
  process.exit(2);
}
const results = cases.map(({ name, instance }) => {
  const valid = validate(instance);
  const errors = (validate.errors || []).map((e) => `${e.instancePath} ${e.message}`);
  return { name, valid, errors };
});
process.stdout.write(JSON.stringify({ version: load("ajv/package.json").version, results }));
