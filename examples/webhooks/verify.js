// Verifies a settled webhook, as the README shows.
//
// As a program (the tests run it on a real delivery):
//     node verify.js SECRET_FILE SIGNATURE_HEADER < body
// exits 0 when the signature is valid and fresh.
const crypto = require("crypto");
const fs = require("fs");

const TOLERANCE = 300; // seconds: each attempt is signed anew, so an old t is a replay

// secret: the secret file's content, whitespace trimmed; body: the raw request body (Buffer).
function verify(secret, signatureHeader, body, now = Date.now() / 1000) {
  const parts = Object.fromEntries(signatureHeader.split(",").map((p) => p.split("=", 2)));
  const t = Number(parts.t);
  if (!Number.isInteger(t) || Math.abs(now - t) > TOLERANCE) return false;
  const expected = crypto.createHmac("sha256", secret).update(`${t}.`).update(body).digest("hex");
  const a = Buffer.from(expected);
  const b = Buffer.from(parts.v1 || "");
  return a.length === b.length && crypto.timingSafeEqual(a, b);
}

module.exports = { verify };

if (require.main === module) {
  const secret = fs.readFileSync(process.argv[2], "utf8").trim();
  process.exit(verify(secret, process.argv[3], fs.readFileSync(0)) ? 0 : 1);
}
