import t from 'tap'
import { MemoryBlobStore } from '../../storage/blobs/memory-blob-store.js'
import { MemoryUploadStore } from '../../storage/blobs/memory-upload-store.js'
import { uploadStoreSuite } from './upload-store.suite.js'

uploadStoreSuite(t, async () => ({ uploads: new MemoryUploadStore(), blobs: new MemoryBlobStore() }))
