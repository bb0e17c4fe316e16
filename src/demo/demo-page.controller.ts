import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { Controller, Get, Param, Res } from '@nestjs/common';
import { ApiExcludeController } from '@nestjs/swagger';
import type { Response } from 'express';

import { AppError } from '../common/app-error.js';

/**
 * Where the bundle lies: dist/web/demo at the project root. This file sits two folders
 * below the root both as source (src/demo) and compiled (dist/demo), so one path fits
 * the built service and the tests that run the sources.
 */
const DEMO_BUNDLE_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'web', 'demo');

/** The files the bundle holds; anything else is a 404, so no path from a URL reaches the disk. */
const FILES: Record<string, string> = {
  'main.js': 'text/javascript; charset=utf-8',
  'main.js.map': 'application/json; charset=utf-8',
  'style.css': 'text/css; charset=utf-8',
  'sw.js': 'text/javascript; charset=utf-8',
  'sw.js.map': 'application/json; charset=utf-8',
};

/** Serves the demo page and its assets (same origin as the API, so no CORS is needed). */
@ApiExcludeController()
@Controller('demo')
export class DemoPageController {
  @Get()
  page(@Res() response: Response): void {
    this.serve(response, 'index.html', 'text/html; charset=utf-8');
  }

  @Get(':file')
  asset(@Param('file') file: string, @Res() response: Response): void {
    const type = Object.hasOwn(FILES, file) ? FILES[file] : undefined;
    if (type === undefined) throw AppError.notFound(`no demo file ${file}`);
    this.serve(response, file, type);
  }

  private serve(response: Response, file: string, type: string): void {
    if (!existsSync(join(DEMO_BUNDLE_DIR, file))) {
      throw AppError.notFound('the demo page is not built: run npm run build');
    }
    // A demo is rebuilt often and is tiny: always revalidate rather than serve a stale bundle.
    response.setHeader('Cache-Control', 'no-cache');
    response.type(type).sendFile(file, { root: DEMO_BUNDLE_DIR });
  }
}
