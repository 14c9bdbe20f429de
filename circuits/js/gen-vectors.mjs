// Generates independent test vectors with circomlibjs (npm) for the medrollup
// Rust implementation (Poseidon, Baby Jubjub, EdDSA-Poseidon, BLAKE-512).
//
// Usage: node gen-vectors.mjs [OUTPUT.json]
// Default output: ../testdata/circomlibjs_vectors.json (relative to this file).
//
// Fully deterministic: "random" values come from sha256(label || counter).
// All field elements / scalars are written as plain DECIMAL strings
// (converted out of circomlibjs's Montgomery form with F.toObject).

import { createHash } from "node:crypto";
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";
import { buildPoseidon, buildBabyjub, buildEddsa } from "circomlibjs";

const require = createRequire(import.meta.url);
const createBlakeHash = require("blake-hash"); // same package circomlibjs/src/eddsa.js imports
const createBlakeHashJs = require("blake-hash/js"); // pure-JS implementation, used as a cross-check

const here = dirname(fileURLToPath(import.meta.url));
const outPath = resolve(process.argv[2] ?? join(here, "..", "testdata", "circomlibjs_vectors.json"));

const circomlibjsVersion = JSON.parse(
    readFileSync(join(here, "node_modules", "circomlibjs", "package.json"), "utf8"),
).version;

// BN254 scalar field modulus (= Baby Jubjub base field).
const P = 21888242871839275222246405745257275088548364400416034343698204186575808495617n;

function fail(msg) {
    console.error("gen-vectors: " + msg);
    process.exit(1);
}
function check(cond, msg) {
    if (!cond) fail("self-check failed: " + msg);
}

// ---------------------------------------------------------------- PRNG
// Deterministic: block i of stream `label` = sha256("medrollup-vectors/" + label + "/" + i).
function makePrng(label) {
    let counter = 0;
    return {
        bytes32() {
            const h = createHash("sha256").update(`medrollup-vectors/${label}/${counter}`).digest();
            counter += 1;
            return h;
        },
        // 256-bit big-endian integer
        u256() {
            return BigInt("0x" + this.bytes32().toString("hex"));
        },
        // uniform-ish field element in [0, P); rejection-sample for full size
        fieldElement() {
            for (;;) {
                const v = this.u256() >> 2n; // 254 bits
                if (v < P) return v;
            }
        },
        // exactly `bits`-bit integer (top bit set)
        bits(bits) {
            const n = BigInt(bits);
            let v = (this.u256() << 256n) | this.u256(); // 512 bits available
            v &= (1n << n) - 1n;
            v |= 1n << (n - 1n);
            return v;
        },
    };
}

// ---------------------------------------------------------------- setup
const poseidon = await buildPoseidon();
const babyJub = await buildBabyjub();
const eddsa = await buildEddsa();
const Fp = poseidon.F; // bn128 Fr, Montgomery-form Uint8Array elements
const F = babyJub.F; // same field, separate instance

const dec = (x) => x.toString(10);
const fToDec = (Fld, x) => {
    const s = dec(Fld.toObject(x));
    check(s === Fld.toString(x, 10), "F.toObject vs F.toString mismatch");
    return s;
};
const ptToDec = (pt) => [fToDec(F, pt[0]), fToDec(F, pt[1])];
const ptFromBig = (xy) => [F.e(xy[0]), F.e(xy[1])];

// Known-answer self-check of the Montgomery conversion.
{
    const h = Fp.toObject(poseidon([1n, 2n]));
    check(
        h === 0x115cc0f5e7d690413df64c6b9662e9cf2a3617f2743245519e19607a4417189an,
        "poseidon([1,2]) != 0x115cc0f5...189a (got 0x" + h.toString(16) + ")",
    );
}

// ---------------------------------------------------------------- poseidon
const poseidonVectors = [];
{
    const prng = makePrng("poseidon");
    for (let n = 1; n <= 12; n++) {
        const small = Array.from({ length: n }, (_, i) => BigInt(i + 1));
        const zeros = Array.from({ length: n }, () => 0n);
        const rand = Array.from({ length: n }, () => prng.fieldElement());
        rand[n - 1] = P - 1n; // boundary element (for n = 1 the only element is p-1)
        for (const inputs of [small, zeros, rand]) {
            inputs.forEach((v) => check(v >= 0n && v < P, "poseidon input out of range"));
            poseidonVectors.push({
                inputs: inputs.map(dec),
                output: fToDec(Fp, poseidon(inputs)),
            });
        }
    }
}

// ---------------------------------------------------------------- babyjub
const subOrder = babyJub.subOrder;
const identity = [F.e(0n), F.e(1n)];
const babyjubVectors = {
    base8: ptToDec(babyJub.Base8),
    sub_order: dec(subOrder),
    add: [],
    mul: [],
};
{
    const prng = makePrng("babyjub");
    const randPoint = () => babyJub.mulPointEscalar(babyJub.Base8, prng.fieldElement() % subOrder);
    const isId = (pt) => F.isZero(pt[0]) && F.eq(pt[1], F.one);

    const P1 = randPoint();
    const Q1 = babyJub.Generator; // full-order generator (not in the prime-order subgroup)
    const P2 = randPoint();
    const P3 = randPoint();
    const P4 = randPoint();
    const negP4 = [F.neg(P4[0]), P4[1]];
    const addCases = [
        [P1, Q1], // generic addition (subgroup point + full-order generator)
        [P2, identity], // adding the identity (0,1)
        [P3, P3], // doubling
        [P4, negP4], // P + (-P) = identity
    ];
    for (const [p, q] of addCases) {
        check(babyJub.inCurve(p) && babyJub.inCurve(q), "add operand not on curve");
        const r = babyJub.addPoint(p, q);
        check(babyJub.inCurve(r), "add result not on curve");
        babyjubVectors.add.push({ p: ptToDec(p), q: ptToDec(q), r: ptToDec(r) });
    }
    check(isId(babyJub.addPoint(P4, negP4)), "P + (-P) != identity");

    const M = randPoint();
    const mulCases = [
        [babyJub.Base8, 0n],
        [M, 1n],
        [babyJub.Base8, subOrder],
        [M, prng.bits(250)],
    ];
    for (const [p, k] of mulCases) {
        const r = babyJub.mulPointEscalar(p, k);
        check(babyJub.inCurve(r), "mul result not on curve");
        babyjubVectors.mul.push({ p: ptToDec(p), k: dec(k), r: ptToDec(r) });
    }
    check(isId(babyJub.mulPointEscalar(babyJub.Base8, subOrder)), "Base8 * subOrder != identity");
    check(isId(babyJub.mulPointEscalar(babyJub.Base8, 0n)), "Base8 * 0 != identity");
}

// ---------------------------------------------------------------- eddsa
const eddsaVectors = [];
{
    const prng = makePrng("eddsa");
    const upstreamPrv = Buffer.from("0001020304050607080900010203040506070809000102030405060708090001", "hex");
    // msg used by circomlibjs's own test/eddsa.js "Sign (using Poseidon) a single 10 bytes from 0 to 9"
    const upstreamMsg = BigInt("0x" + Buffer.from("00010203040506070809", "hex").reverse().toString("hex"));
    const cases = [
        [upstreamPrv, 1234n], // circomlibjs circuits test (eddsaposeidon) case
        [upstreamPrv, upstreamMsg], // circomlibjs test/eddsa.js case (known answer below)
        [prng.bytes32(), 0n],
        [prng.bytes32(), 1n],
        [prng.bytes32(), P - 1n],
        [prng.bytes32(), prng.fieldElement()],
        [prng.bytes32(), prng.fieldElement()],
        [prng.bytes32(), prng.fieldElement()],
    ];
    for (const [prv, m] of cases) {
        const msg = F.e(m);
        const pub = eddsa.prv2pub(prv);
        const sig = eddsa.signPoseidon(prv, msg);
        check(eddsa.verifyPoseidon(msg, sig, pub), "verifyPoseidon rejected a fresh signature");
        check(typeof sig.S === "bigint" && sig.S < subOrder, "S not a reduced bigint");
        eddsaVectors.push({
            prv: Buffer.from(prv).toString("hex"),
            msg: dec(m),
            pub: ptToDec(pub),
            r8: ptToDec(sig.R8),
            s: dec(sig.S),
        });
    }
    // Known answers from circomlibjs's upstream test/eddsa.js.
    const kat = eddsaVectors[1];
    check(
        kat.pub[0] === "13277427435165878497778222415993513565335242147425444199013288855685581939618" &&
            kat.pub[1] === "13622229784656158136036771217484571176836296686641868549125388198837476602820",
        "upstream pubkey KAT",
    );
    check(
        kat.r8[0] === "11384336176656855268977457483345535180380036354188103142384839473266348197733" &&
            kat.r8[1] === "15383486972088797283337779941324724402501462225528836549661220478783371668959" &&
            kat.s === "1672775540645840396591609181675628451599263765380031905495115170613215233181",
        "upstream signature KAT",
    );
}

// ---------------------------------------------------------------- blake512
const blakeVectors = [];
{
    const seq = (n) => Buffer.from(Array.from({ length: n }, (_, i) => i & 0xff));
    // First two are the requested ones (00..1f, empty); the rest cover the
    // 64-byte EdDSA nonce input and BLAKE-512's padding boundaries
    // (111/112 bytes: length field fits / does not fit; 128: full block; 200: two blocks).
    const inputs = [seq(32), Buffer.alloc(0), seq(64), seq(111), seq(112), seq(128), seq(200)];
    for (const input of inputs) {
        const out = createBlakeHash("blake512").update(input).digest("hex");
        const outJs = createBlakeHashJs("blake512").update(input).digest("hex");
        check(out === outJs, "blake-hash native vs js mismatch");
        blakeVectors.push({ input_hex: input.toString("hex"), output_hex: out });
    }
}

// ---------------------------------------------------------------- merkle (arity 4)
// medrollup's trees: empty leaf 0, node = poseidon([c0, c1, c2, c3]), leaf i's
// path reads i in base 4 from the leaves up. A height-3 tree (64 leaves) with a
// few leaves set, its root computed level by level here.
const merkleVectors = [];
{
    const levels = 3;
    const cases = [
        {},
        { 0: 1n },
        { 5: 123456789n, 17: P - 1n, 42: 7n, 63: 99n },
    ];
    for (const leaves of cases) {
        let layer = Array.from({ length: 4 ** levels }, (_, i) => leaves[i] ?? 0n);
        while (layer.length > 1) {
            const next = [];
            for (let i = 0; i < layer.length; i += 4) {
                next.push(Fp.toObject(poseidon(layer.slice(i, i + 4))));
            }
            layer = next;
        }
        merkleVectors.push({
            levels,
            leaves: Object.fromEntries(Object.entries(leaves).map(([k, v]) => [k, v.toString(10)])),
            root: layer[0].toString(10),
        });
    }
}

// ---------------------------------------------------------------- write
const doc = {
    source: `circomlibjs ${circomlibjsVersion} (npm), generated by circuits/js/gen-vectors.mjs`,
    poseidon: poseidonVectors,
    babyjub: babyjubVectors,
    eddsa: eddsaVectors,
    blake512: blakeVectors,
    merkle4: merkleVectors,
};
mkdirSync(dirname(outPath), { recursive: true });
writeFileSync(outPath, JSON.stringify(doc, null, 2) + "\n");
console.error(
    `gen-vectors: wrote ${outPath} (${poseidonVectors.length} poseidon, ` +
        `${babyjubVectors.add.length} add, ${babyjubVectors.mul.length} mul, ` +
        `${eddsaVectors.length} eddsa, ${blakeVectors.length} blake512)`,
);
process.exit(0);
