// Vitest setup file: after each test file, kill the targets it started and did not clean up itself.
import { afterAll } from 'vitest';
import { cleanupAllTargets } from './target.js';

afterAll(cleanupAllTargets);
