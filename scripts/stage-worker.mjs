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
//   worker/webhook_sender.py — webhook attempts with aiohttp (the Worker uses `fetch`)
// Node rather than Python runs this because wrangler already needs Node.
//
// Atomic: `wrangler dev` may read build/worker-upload/ while a rebuild runs (it did, half
// copied: "ModuleNotFoundError: No module named 'caisey.errors'"). So the modules are copied
// into a new sibling directory, which then takes the upload directory's place by rename:
// a reader sees the old set or the new one, never part of one. (Two renames, the old one
// away and the new one in, because rename cannot replace a non-empty directory; between
// them the path is missing for a moment — a failed read, never a mixed module set.)
import { copyFileSync, mkdirSync, readdirSync, renameSync, rmSync } from "node:fs";
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
  "worker/webhook_sender.py",
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

const NEXT = `${OUT}.next-${process.pid}`;
const OLD = `${OUT}.old-${process.pid}`;

// What an interrupted staging (killed) left behind: siblings named for a process that is gone.
function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return error.code === "EPERM";
  }
}
mkdirSync(dirname(OUT), { recursive: true });
for (const name of readdirSync(dirname(OUT))) {
  const left = /^worker-upload\.(?:next|old)-(\d+)$/.exec(name);
  if (left && (Number(left[1]) === process.pid || !alive(Number(left[1])))) {
    rmSync(join(dirname(OUT), name), { recursive: true, force: true });
  }
}

let count = 0;
try {
  for (const pkg of PACKAGES) {
    for (const path of pythonFiles(join(ROOT, pkg))) {
      const name = relative(ROOT, path).split(sep).join("/");
      if (EXCLUDED.has(name)) continue;
      mkdirSync(dirname(join(NEXT, name)), { recursive: true });
      copyFileSync(path, join(NEXT, name));
      count += 1;
    }
  }
} catch (error) {
  rmSync(NEXT, { recursive: true, force: true }); // the upload directory stays as it was
  throw error;
}
try {
  renameSync(OUT, OLD);
} catch (error) {
  if (error.code !== "ENOENT") throw error; // the first staging: nothing to move away
}
renameSync(NEXT, OUT);
rmSync(OLD, { recursive: true, force: true });
console.log(`staged ${count} Python modules in ${relative(ROOT, OUT)}/`);
