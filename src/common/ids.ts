/**
 * What a user id may be: a token's `sub`, 1 to 128 characters, none of them a control
 * character (PostgreSQL's text refuses NUL; the others have no place in an id or a log).
 * Every id that reaches SQL is checked first, at the edge that takes it in.
 */
export const USER_ID = /^\P{Cc}{1,128}$/u;
