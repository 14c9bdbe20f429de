// Verifies EdDSA-Poseidon signatures with circomlibjs (eddsa.verifyPoseidon).
//
// Usage: node verify-eddsa.mjs FILE.json
// FILE.json: [{"pub":["x","y"],"msg":"dec","r8":["x","y"],"s":"dec"}, ...]
//   (decimal strings; extra keys such as "prv" are ignored, so the "eddsa"
//   array of circomlibjs_vectors.json can be fed in directly).
//
// Prints ONE line to stdout: a JSON array of booleans, one per entry, in order.
// Exit 0 when verification ran (even if some entries are false).
// Exit 2 (message on stderr) on malformed input: unreadable file / bad JSON,
// not an array, missing fields, not a canonical decimal string, or a field
// element (pub, r8 coordinates, msg) >= p. s may be any non-negative integer
// (verifyPoseidon itself returns false when s >= subOrder).

import { readFileSync } from "node:fs";
import { buildEddsa } from "circomlibjs";

const P = 21888242871839275222246405745257275088548364400416034343698204186575808495617n;

function die(msg) {
    console.error("verify-eddsa: " + msg);
    process.exit(2);
}

if (process.argv.length !== 3) die("usage: node verify-eddsa.mjs FILE.json");

let entries;
try {
    entries = JSON.parse(readFileSync(process.argv[2], "utf8"));
} catch (e) {
    die(`cannot read/parse ${process.argv[2]}: ${e.message}`);
}
if (!Array.isArray(entries)) die("top-level JSON value must be an array");

function parseDec(v, where, isFieldElement) {
    if (typeof v !== "string" || !/^(0|[1-9][0-9]*)$/.test(v)) {
        die(`${where}: expected a decimal string without sign/leading zeros, got ${JSON.stringify(v)}`);
    }
    const n = BigInt(v);
    if (isFieldElement && n >= P) die(`${where}: field element ${v} is not < p`);
    return n;
}

function parsePoint(v, where) {
    if (!Array.isArray(v) || v.length !== 2) die(`${where}: expected ["x","y"]`);
    return [parseDec(v[0], `${where}[0]`, true), parseDec(v[1], `${where}[1]`, true)];
}

// Parse everything first so malformed input never produces partial output.
const parsed = entries.map((e, i) => {
    if (e === null || typeof e !== "object" || Array.isArray(e)) die(`entry ${i}: expected an object`);
    return {
        pub: parsePoint(e.pub, `entry ${i}.pub`),
        msg: parseDec(e.msg, `entry ${i}.msg`, true),
        r8: parsePoint(e.r8, `entry ${i}.r8`),
        s: parseDec(e.s, `entry ${i}.s`, false),
    };
});

const eddsa = await buildEddsa();
const F = eddsa.babyJub.F;

const results = parsed.map(({ pub, msg, r8, s }) => {
    const A = [F.e(pub[0]), F.e(pub[1])];
    const sig = { R8: [F.e(r8[0]), F.e(r8[1])], S: s }; // S stays a plain BigInt (Scalar)
    return eddsa.verifyPoseidon(F.e(msg), sig, A) === true;
});

console.log(JSON.stringify(results));
process.exit(0);
