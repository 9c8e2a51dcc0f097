import t from 'tap'
import { MemoryBlobStore } from '../../storage/blobs/memory-blob-store.js'
import { blobStoreSuite } from './blob-store.suite.js'

blobStoreSuite(t, async () => new MemoryBlobStore())
