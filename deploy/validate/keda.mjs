// Validates KEDA resources (ScaledObject, TriggerAuthentication) against the schemas generated from
// KEDA's CRDs (npm @kubernetes-models/keda); kubernetes-validate knows only built-in kinds.
// Usage: node keda.mjs FILE...  (run by scripts/validate-deploy.sh, which installs the packages)
import { readFileSync } from "node:fs";
import yaml from "js-yaml";
import * as keda from "@kubernetes-models/keda/keda.sh/v1alpha1";

let failed = false;
let checked = 0;
for (const file of process.argv.slice(2)) {
  for (const doc of yaml.loadAll(readFileSync(file, "utf8"))) {
    if (!doc || doc.apiVersion !== "keda.sh/v1alpha1") continue;
    const Kind = keda[doc.kind];
    const name = `${file}: ${doc.kind}/${doc.metadata?.name}`;
    if (!Kind) {
      console.log(`FAIL ${name}: no schema for this kind`);
      failed = true;
      continue;
    }
    try {
      new Kind(doc).validate();
      console.log(`OK   ${name}`);
      checked++;
    } catch (e) {
      console.log(`FAIL ${name}: ${e.message}`);
      failed = true;
    }
  }
}
if (checked === 0 && !failed) {
  console.log("FAIL no KEDA resource found");
  failed = true;
}
process.exit(failed ? 1 : 0);
