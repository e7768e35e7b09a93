// Stage the Python modules of the Cloudflare Worker for wrangler (wrangler.toml `[build]`).
//
// Why a staging directory: for a Python Worker, wrangler uploads every `*.py` below
// `base_dir` (default: the directory of `main`) and names each module by its path relative
// to `base_dir`; the main module itself is uploaded under its file name (`entry.py`).
// `worker/` and `caisey/` must be importable as packages, so `base_dir` would have to be the
// repository root — which also holds agent/, tests/, bench/, .venv/ and node_modules/, and
// wrangler's module rules cannot be narrowed for Python (the `rules` field refuses
// "PythonModule"). So this script copies exactly the modules the Worker imports into
// build/worker-upload/ (git-ignored), and wrangler.toml points `base_dir` there.
//
// Uploaded: caisey/**/*.py and worker/**/*.py, except
//   worker/entry.py       — uploaded as the main module `entry.py` via `main`
//   worker/local_host.py  — the aiohttp host; the Worker uses only the standard library
//   worker/sqlite_store.py — the local host's sqlite3 store (the Worker has ctx.storage.sql)
//   worker/ed25519_local.py — Ed25519 with `cryptography` (the Worker verifies with WebCrypto)
// Node rather than Python runs this because wrangler already needs Node.
import { copyFileSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { dirname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const OUT = join(ROOT, "build", "worker-upload");
const PACKAGES = ["caisey", "worker"];
const EXCLUDED = new Set([
  "worker/entry.py",
  "worker/local_host.py",
  "worker/sqlite_store.py",
  "worker/ed25519_local.py",
]);

function* pythonFiles(dir) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      if (entry.name !== "__pycache__") yield* pythonFiles(path);
    } else if (entry.isFile() && entry.name.endsWith(".py")) {
      yield path;
    }
  }
}

rmSync(OUT, { recursive: true, force: true });
let count = 0;
for (const pkg of PACKAGES) {
  for (const path of pythonFiles(join(ROOT, pkg))) {
    const name = relative(ROOT, path).split(sep).join("/");
    if (EXCLUDED.has(name)) continue;
    mkdirSync(dirname(join(OUT, name)), { recursive: true });
    copyFileSync(path, join(OUT, name));
    count += 1;
  }
}
console.log(`staged ${count} Python modules in ${relative(ROOT, OUT)}/`);
