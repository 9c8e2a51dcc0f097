/**
 * The one error table. Every floor throws a FlotillaError with a stable code;
 * the HTTP layer renders it through this table. Codes never change; messages may.
 *
 * Codes that share an OCI code with another (e.g. UPLOAD_OUT_OF_ORDER → BLOB_UPLOAD_INVALID)
 * exist because they need a different HTTP status.
 */
export const ERRORS = {
  BLOB_UNKNOWN: { status: 404, oci: 'BLOB_UNKNOWN', message: 'blob unknown to registry' },
  BLOB_UPLOAD_INVALID: { status: 400, oci: 'BLOB_UPLOAD_INVALID', message: 'blob upload invalid' },
  UPLOAD_OUT_OF_ORDER: { status: 416, oci: 'BLOB_UPLOAD_INVALID', message: 'chunk out of order' },
  RANGE_NOT_SATISFIABLE: { status: 416, oci: 'BLOB_UPLOAD_INVALID', message: 'requested range not satisfiable' },
  BLOB_UPLOAD_UNKNOWN: { status: 404, oci: 'BLOB_UPLOAD_UNKNOWN', message: 'blob upload unknown to registry' },
  DIGEST_INVALID: { status: 400, oci: 'DIGEST_INVALID', message: 'provided digest did not match uploaded content' },
  MANIFEST_BLOB_UNKNOWN: { status: 400, oci: 'MANIFEST_BLOB_UNKNOWN', message: 'manifest references a blob unknown to registry' },
  MANIFEST_INVALID: { status: 400, oci: 'MANIFEST_INVALID', message: 'manifest invalid' },
  MANIFEST_UNKNOWN: { status: 404, oci: 'MANIFEST_UNKNOWN', message: 'manifest unknown to registry' },
  MANIFEST_TOO_LARGE: { status: 413, oci: 'SIZE_INVALID', message: 'manifest too large' },
  COMMAND_TOO_LARGE: { status: 413, oci: 'SIZE_INVALID', message: 'the change is too large to replicate' },
  BODY_TOO_LARGE: { status: 413, oci: 'SIZE_INVALID', message: 'the request body is too large' },
  NAME_INVALID: { status: 400, oci: 'NAME_INVALID', message: 'invalid repository name' },
  NAME_UNKNOWN: { status: 404, oci: 'NAME_UNKNOWN', message: 'repository name not known to registry' },
  TAG_INVALID: { status: 400, oci: 'MANIFEST_INVALID', message: 'invalid tag' },
  SIZE_INVALID: { status: 400, oci: 'SIZE_INVALID', message: 'provided length did not match content length' },
  PAGINATION_INVALID: { status: 400, oci: 'PAGINATION_NUMBER_INVALID', message: 'invalid number of results requested' },
  // Never exactly the messages docker's client knows for these codes: it would reduce the error
  // to a bare code, which its push loop does not treat as final, and retry for a minute.
  UNAUTHORIZED: { status: 401, oci: 'UNAUTHORIZED', message: 'authentication required: log in first (docker login)' },
  DENIED: { status: 403, oci: 'DENIED', message: 'requested access to the resource is denied for this account' },
  TAG_IMMUTABLE: { status: 409, oci: 'DENIED', message: 'tag is immutable' },
  QUOTA_EXCEEDED: { status: 403, oci: 'DENIED', message: 'storage quota exceeded' },
  DISK_FULL: { status: 507, oci: 'UNAVAILABLE', message: 'no node has disk space for this upload' },
  UNSUPPORTED: { status: 415, oci: 'UNSUPPORTED', message: 'the operation is unsupported' },
  METHOD_NOT_ALLOWED: { status: 405, oci: 'UNSUPPORTED', message: 'the operation is not allowed' },
  TOOMANYREQUESTS: { status: 429, oci: 'TOOMANYREQUESTS', message: 'too many requests' },
  ALREADY_EXISTS: { status: 409, oci: 'CONFLICT', message: 'already exists' },
  NOT_FOUND: { status: 404, oci: 'NAME_UNKNOWN', message: 'not found' },
  BAD_REQUEST: { status: 400, oci: 'UNSUPPORTED', message: 'bad request' },
  UPSTREAM_ERROR: { status: 502, oci: 'UNAVAILABLE', message: 'the upstream registry of a remote repository answered badly' },
  UPSTREAM_UNAVAILABLE: { status: 503, oci: 'UNAVAILABLE', message: 'the upstream registry of a remote repository cannot be reached' },
  UNAVAILABLE: { status: 503, oci: 'UNAVAILABLE', message: 'service unavailable' },
  INTERNAL: { status: 500, oci: 'UNKNOWN', message: 'internal error' },
} as const satisfies Record<string, { status: number; oci: string; message: string }>

export type ErrorCode = keyof typeof ERRORS

export class FlotillaError extends Error {
  static override name = 'FlotillaError'
  readonly code: ErrorCode
  readonly detail: unknown
  constructor (code: ErrorCode, message?: string, detail?: unknown) {
    super(message ?? ERRORS[code].message)
    this.name = 'FlotillaError'
    this.code = code
    this.detail = detail
  }

  get status (): number { return ERRORS[this.code].status }
  get ociCode (): string { return ERRORS[this.code].oci }
}

export function isFlotillaError (err: unknown): err is FlotillaError {
  return err instanceof FlotillaError
}
