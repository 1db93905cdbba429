// Builds both module formats from src/ with the TypeScript compiler:
//   dist/esm  ES modules (package.json "type": "module")
//   dist/cjs  CommonJS (its own package.json says "type": "commonjs")
// Both keep `import('jose')` as a real dynamic import (jose is ESM-only;
// tsc's nodenext mode leaves it alone in CommonJS output), so `require()`
// users on Node 18 get a working build too.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tsc = path.join(root, 'node_modules/typescript/bin/tsc');
const run = (args) => execFileSync(process.execPath, [tsc, ...args], { cwd: root, stdio: 'inherit' });

fs.rmSync(path.join(root, 'dist'), { recursive: true, force: true });
run(['-p', 'tsconfig.json']);

// the CommonJS build: the same sources under a package.json that says commonjs
const cjsSrc = path.join(root, 'build/cjs-src');
fs.rmSync(path.join(root, 'build'), { recursive: true, force: true });
fs.mkdirSync(cjsSrc, { recursive: true });
fs.cpSync(path.join(root, 'src'), cjsSrc, { recursive: true });
fs.writeFileSync(path.join(root, 'build/package.json'), '{ "type": "commonjs" }\n');
fs.writeFileSync(
  path.join(root, 'build/tsconfig.json'),
  JSON.stringify({
    extends: '../tsconfig.json',
    compilerOptions: { rootDir: 'cjs-src', outDir: '../dist/cjs' },
    include: ['cjs-src'],
  }),
);
run(['-p', 'build/tsconfig.json']);
fs.writeFileSync(path.join(root, 'dist/cjs/package.json'), '{ "type": "commonjs" }\n');
fs.rmSync(path.join(root, 'build'), { recursive: true, force: true });
