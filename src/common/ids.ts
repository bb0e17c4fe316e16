/**
 * What a user id may be: a token's `sub`, 1 to 128 characters, none of them a control
 * character (PostgreSQL's text refuses NUL; the others have no place in an id or a log).
 * Every id that reaches SQL is checked first, at the edge that takes it in.
 */
export const USER_ID = /^\P{Cc}{1,128}$/u;

/** A UUID, in either case (PostgreSQL takes both and answers in lower case). */
export const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

/** A client install's id, chosen by the client (PROTOCOL.md section 1). */
export const DEVICE_ID = /^[A-Za-z0-9_-]{1,64}$/;
