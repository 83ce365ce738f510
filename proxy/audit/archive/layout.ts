/**
 * Where an archive's objects sit in its bucket: `<prefix>/segments/<first seq>-<last seq>.tar.gz`,
 * seqs zero-padded so that a listing in key order is the log's order.
 */

/** Segments sit under `<prefix>/segments/`, named by their range so a listing sorts them in seq order. */
export const SEGMENTS_FOLDER = 'segments/';
const SEQ_DIGITS = 16;

export function segmentObjectName(firstSeq: number, lastSeq: number): string {
  return `${SEGMENTS_FOLDER}${String(firstSeq).padStart(SEQ_DIGITS, '0')}-${String(lastSeq).padStart(SEQ_DIGITS, '0')}.tar.gz`;
}

/** The range an object's name (the part after the prefix) claims, or undefined when it is not a segment's name. */
export function parseSegmentObjectName(name: string): { firstSeq: number; lastSeq: number } | undefined {
  const m = /^segments\/(\d{16})-(\d{16})\.tar\.gz$/.exec(name);
  return m ? { firstSeq: Number(m[1]), lastSeq: Number(m[2]) } : undefined;
}
