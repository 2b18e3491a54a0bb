// Validates custom resources against @kubernetes-models' published schemas.
// stdin: a JSON array of objects; stdout: a JSON array of results
// ({kind, name, ok, error}). MODELS_DIR: the folder holding node_modules.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const base = join(process.env.MODELS_DIR, "node_modules", "@kubernetes-models");
const packages = {
  "argoproj.io": "argo-rollouts",
  "networking.istio.io": "istio",
  "security.istio.io": "istio",
  "monitoring.coreos.com": "prometheus-operator",
};
const objects = JSON.parse(readFileSync(0, "utf8"));
const results = [];
for (const obj of objects) {
  const [group, version] = obj.apiVersion.split("/");
  const pkg = packages[group];
  const name = obj.metadata && obj.metadata.name;
  if (!pkg) {
    results.push({ kind: obj.kind, name, ok: null, error: `no published schema for ${group}` });
    continue;
  }
  const file = join(base, pkg, group, version, `${obj.kind}.js`);
  try {
    const mod = await import(pathToFileURL(file).href);
    const Model = mod[obj.kind];
    new Model(obj).validate();
    results.push({ kind: obj.kind, name, ok: true });
  } catch (e) {
    results.push({ kind: obj.kind, name, ok: false, error: String(e && e.message || e).slice(0, 2000) });
  }
}
process.stdout.write(JSON.stringify(results));
