// The group message policy, without NATS: given a Group.CallbackBeforeSendMsg
// body, decide whether to allow the message, allow it with banned words
// masked, or block it. main.js does the wiring.

/** Raised for a body the filter cannot read; main.js answers it with the
 * NATS services error headers, so the bridge uses its default verdict. */
export class BadBodyError extends Error {}

// Scripts written without spaces between words.
const UNSPACED = /^[\p{sc=Han}\p{sc=Hiragana}\p{sc=Katakana}]$/u;

/**
 * Compiles a list of words into a case-insensitive regular expression that
 * matches them as whole words: "spam" matches "Spam!" but not "spammer".
 * A word boundary is anything that is not a letter, mark or digit, in any
 * script. Chinese and Japanese are written without spaces, so a word that
 * starts (or ends) with a Han, Hiragana or Katakana character matches there
 * without a boundary: "垃圾" matches in "这是垃圾". Returns null for an
 * empty list.
 */
export function wordPattern(words) {
  const list = words.map((w) => w.trim()).filter((w) => w !== "");
  if (list.length === 0) {
    return null;
  }
  // Longest first, so that "scam artist" wins over "scam".
  list.sort((a, b) => [...b].length - [...a].length);
  const alternatives = list.map((w) => {
    const chars = [...w];
    const escaped = w.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
    const before = UNSPACED.test(chars[0]) ? "" : "(?<![\\p{L}\\p{M}\\p{N}])";
    const after = UNSPACED.test(chars[chars.length - 1]) ? "" : "(?![\\p{L}\\p{M}\\p{N}])";
    return before + escaped + after;
  });
  return new RegExp(alternatives.join("|"), "giu");
}

/** Splits a comma-separated list, as in BANNED=spam,scam. */
export function splitList(s) {
  return s.split(",").map((w) => w.trim()).filter((w) => w !== "");
}

const TEXT = "TIMTextElem";

/**
 * Reads the message elements of a callback body (a string or bytes of
 * JSON). Throws BadBodyError if the body is not a JSON object whose MsgBody
 * is an array of {MsgType, MsgContent} objects, with a string Text in every
 * text element.
 */
export function parseMsgBody(data) {
  let body;
  try {
    body = JSON.parse(typeof data === "string" ? data : new TextDecoder().decode(data));
  } catch (e) {
    throw new BadBodyError(`not JSON: ${e.message}`);
  }
  if (!isObject(body)) {
    throw new BadBodyError("not a JSON object");
  }
  if (!Array.isArray(body.MsgBody)) {
    throw new BadBodyError("MsgBody is not an array");
  }
  body.MsgBody.forEach((el, i) => {
    if (!isObject(el) || typeof el.MsgType !== "string" || !isObject(el.MsgContent)) {
      throw new BadBodyError(`MsgBody[${i}] is not a {MsgType, MsgContent} object`);
    }
    if (el.MsgType === TEXT && typeof el.MsgContent.Text !== "string") {
      throw new BadBodyError(`MsgBody[${i}] is a ${TEXT} without a string Text`);
    }
  });
  return body.MsgBody;
}

function isObject(v) {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The custom code of a blocked message; Group.CallbackBeforeSendMsg accepts
 * 10100–10200, and Tencent hands it and ErrorInfo to the sender's app. */
export const BLOCK_CODE = 10101;

/**
 * Decides on one message. banned and blocked are patterns from wordPattern
 * (or null). Returns {verdict, reply, masked}: verdict is "allow", "mask" or
 * "block", reply is Tencent's reply object, masked the number of words
 * replaced. A blocked word wins over a banned one.
 */
export function decide(msgBody, banned, blocked) {
  const texts = msgBody.filter((el) => el.MsgType === TEXT).map((el) => el.MsgContent.Text);
  if (blocked && texts.some((t) => matches(blocked, t))) {
    return {
      verdict: "block",
      reply: { ActionStatus: "OK", ErrorCode: BLOCK_CODE, ErrorInfo: "message blocked" },
      masked: 0,
    };
  }
  let masked = 0;
  const rewritten = msgBody.map((el) => {
    if (el.MsgType !== TEXT || !banned) {
      return el;
    }
    const text = el.MsgContent.Text.replace(banned, (word) => {
      masked++;
      return "*".repeat([...word].length); // one star per character, not per UTF-16 unit
    });
    return text === el.MsgContent.Text ? el : { ...el, MsgContent: { ...el.MsgContent, Text: text } };
  });
  if (masked === 0) {
    return { verdict: "allow", reply: { ActionStatus: "OK", ErrorCode: 0, ErrorInfo: "" }, masked };
  }
  // MsgBody replaces the whole message, so it carries every element, the
  // untouched ones included; it needs ErrorCode 0.
  return {
    verdict: "mask",
    reply: { ActionStatus: "OK", ErrorCode: 0, ErrorInfo: "", MsgBody: rewritten },
    masked,
  };
}

function matches(re, s) {
  re.lastIndex = 0; // a global pattern remembers where it stopped
  return re.test(s);
}
