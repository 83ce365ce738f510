/**
 * Message type bytes of the PostgreSQL frontend/backend protocol 3.0, one table per direction: the
 * same byte means different things depending on who sends it (`D` is Describe from the client and
 * DataRow from the server). https://www.postgresql.org/docs/current/protocol-message-formats.html
 */

/** Messages a client (frontend) sends after startup. */
export const FrontendCode = {
  Bind: 0x42, // B
  Close: 0x43, // C
  CopyData: 0x64, // d
  CopyDone: 0x63, // c
  CopyFail: 0x66, // f
  Describe: 0x44, // D
  Execute: 0x45, // E
  Flush: 0x48, // H
  FunctionCall: 0x46, // F
  Parse: 0x50, // P
  /** PasswordMessage, SASLInitialResponse, SASLResponse, GSSResponse: which one depends on the state. */
  Password: 0x70, // p
  Query: 0x51, // Q
  Sync: 0x53, // S
  Terminate: 0x58, // X
} as const;

/** Messages a server (backend) sends. */
export const BackendCode = {
  Authentication: 0x52, // R
  BackendKeyData: 0x4b, // K
  BindComplete: 0x32, // 2
  CloseComplete: 0x33, // 3
  CommandComplete: 0x43, // C
  CopyBothResponse: 0x57, // W
  CopyData: 0x64, // d
  CopyDone: 0x63, // c
  CopyInResponse: 0x47, // G
  CopyOutResponse: 0x48, // H
  DataRow: 0x44, // D
  EmptyQueryResponse: 0x49, // I
  ErrorResponse: 0x45, // E
  FunctionCallResponse: 0x56, // V
  NegotiateProtocolVersion: 0x76, // v
  NoData: 0x6e, // n
  NoticeResponse: 0x4e, // N
  NotificationResponse: 0x41, // A
  ParameterDescription: 0x74, // t
  ParameterStatus: 0x53, // S
  ParseComplete: 0x31, // 1
  PortalSuspended: 0x73, // s
  ReadyForQuery: 0x5a, // Z
  RowDescription: 0x54, // T
} as const;

const FRONTEND_CODES = new Set<number>(Object.values(FrontendCode));
const BACKEND_CODES = new Set<number>(Object.values(BackendCode));

export function isFrontendCode(code: number): boolean {
  return FRONTEND_CODES.has(code);
}

export function isBackendCode(code: number): boolean {
  return BACKEND_CODES.has(code);
}

/** The Int32 code after the length in untyped startup-phase packets. */
export const StartupCode = {
  /** Protocol 3.0 StartupMessage: major 3 in the high 16 bits, minor 0 in the low. */
  Protocol3: 196608,
  SSLRequest: 80877103,
  GSSENCRequest: 80877104,
  CancelRequest: 80877102,
} as const;

/** `R` subtypes (Int32 after the length). */
export const AuthCode = {
  Ok: 0,
  CleartextPassword: 3,
  MD5Password: 5,
  SASL: 10,
  SASLContinue: 11,
  SASLFinal: 12,
} as const;

/** SQLSTATE codes the gateway sends (https://www.postgresql.org/docs/current/errcodes-appendix.html). */
export const SqlState = {
  InsufficientPrivilege: '42501',
  ProtocolViolation: '08P01',
  ConnectionFailure: '08006',
  ConnectionRejected: '08004',
  InvalidAuthorization: '28000',
  InvalidPassword: '28P01',
  FeatureNotSupported: '0A000',
  QueryCanceled: '57014',
  AdminShutdown: '57P01',
  CannotConnectNow: '57P03',
  SystemError: '58000',
  ProgramLimitExceeded: '54000',
  InternalError: 'XX000',
} as const;

/** Printable name of a type byte for error messages (`'Q' (0x51)`). */
export function codeName(code: number): string {
  const ch = code >= 0x20 && code < 0x7f ? `'${String.fromCharCode(code)}' ` : '';
  return `${ch}(0x${code.toString(16).padStart(2, '0')})`;
}
