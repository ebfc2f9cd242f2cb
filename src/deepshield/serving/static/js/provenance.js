/* What a file says about itself (metadata, Content Credentials), in words: shown, never scored. */

// What the file says about itself (README "Web app"): shown for the reader, never scored.
export function metadataFacts(meta) {
  if (!meta) return [];
  const facts = [
    ["Camera (metadata)", meta.camera],
    ["Software (metadata)", meta.software],
    ["Date in the file", meta.created],
    ["Location", meta.has_location ? "in the file's metadata (not shown here)" : null],
    ["AI-generator settings", meta.generator_settings.length ? `found in the metadata (${meta.generator_settings.join(", ")})` : null],
    ...credentialsFacts(meta),
    ["Declared source", meta.declared_source ? `${meta.declared_source.meaning} (${meta.declared_source.code}; ${sourcePlace(meta.declared_source)})` : null],
  ].filter(([, value]) => value);
  return facts.length ? facts : [["Metadata", "none found (sites and apps often remove it)"]];
}

// As DeclaredSource.place says it (a result saved before `verified` was kept reads as verified).
function sourcePlace(source) {
  if (source.declared_in === "xmp") return "in its XMP metadata, unsigned";
  const where = source.in_ingredient ? "in the Content Credentials of a file it was made from" : "in its Content Credentials";
  return source.verified === false ? `${where}, which fail verification` : where;
}

// The C2PA SDK's reading of the file's Content Credentials, in words: the server's (ContentCredentials.state_text),
// one text for the page, inspect and the API. A result saved before it carried one says its state alone.
function credentialsState(cred) {
  return cred.state_text || `signature ${cred.state}`;
}

// As ContentCredentials.signer says it.
function signerText(cred) {
  const who = cred.state === "trusted" ? cred.signed_by : `${cred.signed_by} (its certificate's own word: not vouched for)`;
  return cred.signed_at ? `${who}, ${cred.signed_at}` : who;
}

function credentialsFacts(meta) {
  const cred = meta.credentials;
  if (!cred) {  // a result saved before Content Credentials were read only knew that a manifest was there
    return [["Content Credentials (C2PA)", meta.content_credentials ? "a manifest is present (not verified)" : null]];
  }
  return [
    ["Content Credentials (C2PA)", credentialsState(cred)],
    ["Signed by (C2PA)", cred.signed_by && signerText(cred)],
    ["Made with (C2PA)", cred.made_with],
    ["Actions (C2PA)", cred.actions.join(", ")],
    ["Made from (C2PA)", (cred.ingredients || []).join(", ")],
    ["C2PA problems", cred.problems.join("; ")],
  ];
}

// Beside the verdict when the file says generative AI made or edited it: a claim, never a score.
export function declaredGenerativeText(meta) {
  const source = meta && meta.declared_source;
  if (!source || !source.generative_ai) return null;
  const claim = "This is the file's own claim, not part of the scores.";
  if (source.declared_in === "xmp") {
    return `The file declares “${source.meaning}” in its XMP metadata (unsigned: easily added or removed). ${claim}`;
  }
  const signature = credentialsState(meta.credentials);
  return source.in_ingredient
    ? `The file's Content Credentials (${signature}) say it was made from a file that declares “${source.meaning}”. ${claim}`
    : `The file declares “${source.meaning}” in its Content Credentials (${signature}). ${claim}`;
}
